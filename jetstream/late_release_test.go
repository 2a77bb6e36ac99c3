package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/microchannels/channels"
)

// A handler that outlives the stop's deadline settles (releases) its
// message after Close has closed the connection: no race, no panic, and
// the message comes back to the group's next member.
func TestReleaseAfterDrainDeadline(t *testing.T) {
	url, _ := startServer(t)
	ctx := context.Background()
	o := fast
	var runs counter
	done := make(chan struct{})
	p, err := channels.New(channels.WithAdapter(newAdapter(t, url, o)))
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Register(&service{Name: "late", Channels: channels.Channels{"late.topic": {Group: "g", MaxInFlight: 2,
		Handler: func(ctx context.Context, _ *channels.Message) error {
			if runs.get() > 0 {
				runs.inc()
				return nil
			}
			runs.inc()
			time.Sleep(500 * time.Millisecond) // ignores ctx
			close(done)
			return ctx.Err()
		}}}})
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	if err := snd.SendToChannel(ctx, "late.topic", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "running", func() bool { return runs.get() == 1 })
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_ = p.Stop(sctx)
	cancel()
	<-done
	startPlugin(t, newAdapter(t, url, o), &service{Name: "late", Channels: channels.Channels{"late.topic": {Group: "g",
		Handler: func(context.Context, *channels.Message) error { runs.inc(); return nil }}}})
	eventually(t, 10*time.Second, "delivered again", func() bool { return runs.get() == 2 })
}
