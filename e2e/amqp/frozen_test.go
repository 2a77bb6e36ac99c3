package amqp

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
)

// linkedAdapter is an adapter whose connections go through a link-fault
// proxy.
func linkedAdapter(t *testing.T, opts ...chamqp.Option) (*chamqp.Adapter, *linkfault.Link) {
	t.Helper()
	l := linkfault.New(t, "127.0.0.1:5672")
	a, err := chamqp.New("amqp://guest:guest@"+l.Addr()+"/", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a, l
}

// timed returns f's error and how long it took.
func timed(f func() error) (error, time.Duration) {
	start := time.Now()
	err := f()
	return err, time.Since(start)
}

// frozenMember starts a member on a linked adapter with 4 handlers
// running (waiting for their context) and its publishing channel open,
// then freezes the link.
func frozenMember(t *testing.T) (*chamqp.Adapter, *linkfault.Link, string) {
	t.Helper()
	ch := unique("frozen.adapter")
	cleanup(t, []string{"g." + ch}, []string{ch})
	a, link := linkedAdapter(t, chamqp.WithPublisherChannels(1))
	var running atomic.Int64
	p := startPluginOn(t, a, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxInFlight: 4,
		Handler: func(ctx context.Context, _ *channels.Message) error {
			running.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}}}})
	snd, _ := startPlugin(t, nil, nil)
	ctx := context.Background()
	for i := range 8 {
		if err := snd.SendToChannel(ctx, ch, i); err != nil {
			t.Fatal(err)
		}
	}
	// A send through the member first, so its publishing channel is open.
	if err := p.SendToChannel(ctx, ch, "warm"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "4 handlers running", func() bool { return running.Load() == 4 })
	link.Freeze()
	t.Cleanup(link.Kill)
	return a, link, ch
}

// frozenGrace is how much longer than its deadline a call may take on a
// frozen link.
const frozenGrace = 250 * time.Millisecond

// TestFrozenLinkSend: on a frozen link (no byte moves, the connection
// stays open), Adapter.Publish keeps its deadline: a 32 MiB send, and a
// send that needs a new channel (to declare a new exchange), each fail by
// their context's deadline plus 250 ms.
func TestFrozenLinkSend(t *testing.T) {
	needAMQP(t)
	a, _, ch := frozenMember(t)
	ctx := context.Background()
	big := &broker.Outgoing{Payload: make([]byte, 32<<20)}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err, took := timed(func() error { return a.Publish(sctx, ch, big) })
	cancel()
	t.Logf("32 MiB send on a frozen link: %v, %v", took.Round(time.Millisecond), err)
	if err == nil || took > 2*time.Second+frozenGrace {
		t.Errorf("32 MiB send on a frozen link: %v after %v", err, took)
	}
	sctx, cancel = context.WithTimeout(ctx, time.Second)
	err, took = timed(func() error {
		return a.Publish(sctx, unique("frozen.new"), &broker.Outgoing{Payload: []byte("1")})
	})
	cancel()
	t.Logf("send to a new exchange on a frozen link: %v, %v", took.Round(time.Millisecond), err)
	if err == nil || took > time.Second+frozenGrace {
		t.Errorf("send to a new exchange on a frozen link: %v after %v", err, took)
	}
}

// TestFrozenLinkClose: Adapter.Close with a 2 s deadline on a frozen link
// (drain, basic.cancel, channel and connection closes) returns by the
// deadline plus 250 ms, naming the handlers it cut.
func TestFrozenLinkClose(t *testing.T) {
	needAMQP(t)
	a, _, _ := frozenMember(t)
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err, took := timed(func() error { return a.Close(cctx) })
	cancel()
	t.Logf("Close on a frozen link: %v, %v", took.Round(time.Millisecond), err)
	if took > 2*time.Second+frozenGrace {
		t.Errorf("Close on a frozen link took %v", took)
	}
	var de *broker.DrainError
	if !errors.As(err, &de) || len(de.Running) != 4 {
		t.Errorf("Close on a frozen link: %v (want a drain error naming 4 handlers)", err)
	}
}

// TestFrozenLinkCloseIdle: an idle member (no handler running) closed with
// a 2 s deadline on a frozen link returns by the deadline plus 250 ms, and
// does not report a drain cut with "0 handler(s) still running": basic.cancel
// gets no answer, and the consumer stops waiting for its deliveries.
func TestFrozenLinkCloseIdle(t *testing.T) {
	needAMQP(t)
	ch := unique("frozen.idle")
	cleanup(t, []string{"g." + ch}, []string{ch})
	a, link := linkedAdapter(t)
	got := &channelstest.Recorder{}
	startPluginOn(t, a, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", Handler: got.Handle}}})
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the message", func() bool { return got.Count() == 1 })
	link.Freeze()
	t.Cleanup(link.Kill)
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err, took := timed(func() error { return a.Close(cctx) })
	cancel()
	t.Logf("Close of an idle member on a frozen link: %v, %v", took.Round(time.Millisecond), err)
	if took > 2*time.Second+frozenGrace {
		t.Errorf("Close on a frozen link took %v", took)
	}
	var de *broker.DrainError
	if errors.As(err, &de) && len(de.Running) == 0 {
		t.Errorf("an idle drain reported as cut: %v", err)
	}
}
