package channels_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// hangingClose is an adapter whose Close hangs until release is closed,
// as a driver's does on a frozen link.
type hangingClose struct {
	broker.Adapter
	release chan struct{}
}

func (a *hangingClose) Close(ctx context.Context) error {
	<-a.release
	return a.Adapter.Close(ctx)
}

// Stop keeps its deadline when the adapter's Close hangs (the Close is
// left running and reported), and a Start after it waits for that Close
// before connecting again, so the old Close cannot close what the new
// start opens: the restarted plugin sends and consumes.
func TestStartAfterAnAbandonedCloseWorks(t *testing.T) {
	a := &hangingClose{Adapter: memory.New(), release: make(chan struct{})}
	got := make(chan int, 4)
	type svc struct {
		Name     string
		Channels channels.Channels
	}
	s := &svc{Name: "restart", Channels: channels.Channels{"restart.ch": channels.On(func(ctx context.Context, m *broker.Message) error {
		var n int
		_ = m.Decode(&n)
		got <- n
		return nil
	})}}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start := time.Now()
	stopErr := p.Stop(sctx)
	cancel()
	if took := time.Since(start); took > 100*time.Millisecond+kit.BoundedGrace+100*time.Millisecond {
		t.Fatalf("Stop took %v with a hanging Close", took)
	}
	var ae *broker.AbandonedError
	if !errors.As(stopErr, &ae) {
		t.Fatalf("Stop: %v, want an *AbandonedError", stopErr)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = p.Start(short)
	cancel()
	if !errors.Is(err, channels.ErrAlreadyStarted) {
		t.Fatalf("Start while the old Close runs: %v", err)
	}
	close(a.release)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	if err := p.SendToChannel(ctx, "restart.ch", 2); err != nil {
		t.Fatalf("send after the restart: %v", err)
	}
	select {
	case n := <-got:
		if n != 2 {
			t.Fatalf("got %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the restarted plugin never consumed")
	}
}
