package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/microchannels/channels"
)

// Every message of a backlog is read in order with MaxInFlight 1 and with
// read-ahead (MaxInFlight 8).
func TestPullReadsBacklog(t *testing.T) {
	url, _ := startServer(t)
	ctx := context.Background()
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	const n = 300
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	if err := snd.SendBatch(ctx, "backlog", channels.BatchOf(items...)); err != nil {
		t.Fatal(err)
	}
	for _, mif := range []int{1, 8} {
		var c counter
		o := fast
		o.DeliverPolicy = 2 // DeliverAll
		start := time.Now()
		startPlugin(t, newAdapter(t, url, o), &service{Name: "r", Channels: channels.Channels{"backlog": {
			Group: "g" + string(rune('0'+mif)), MaxInFlight: mif,
			Handler: func(context.Context, *channels.Message) error { c.inc(); return nil }}}})
		eventually(t, 10*time.Second, "every message", func() bool { return c.get() == n })
		t.Logf("MaxInFlight %d: %d messages in %s", mif, n, time.Since(start))
	}
}
