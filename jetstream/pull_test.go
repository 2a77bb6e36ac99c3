package jetstream_test

import (
	"context"
	"testing"
	"time"

	js "github.com/nats-io/nats.go/jetstream"

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

// With AckSync each acknowledgement is confirmed by the server (a double
// ack on the acknowledgement subject); Message.Raw is the jetstream.Msg.
func TestAckSyncAndRaw(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	o := fast
	o.AckSync = true
	var got counter
	var rawOK bool
	startPlugin(t, newAdapter(t, url, o), &service{Name: "as", Channels: channels.Channels{"as.topic": {Group: "g",
		Handler: func(_ context.Context, m *channels.Message) error {
			if r, ok := m.Raw.(js.Msg); ok {
				md, err := r.Metadata()
				rawOK = err == nil && md.Stream == "as_topic" && md.Consumer == "g" && md.NumDelivered == 1
			}
			got.inc()
			return nil
		}}}})
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	for i := range 3 {
		if err := snd.SendToChannel(context.Background(), "as.topic", i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "handled", func() bool { return got.get() == 3 })
	eventually(t, 5*time.Second, "acknowledged", func() bool { return consumerIdle(j, "as_topic", "g") })
	if !rawOK {
		t.Fatal("Message.Raw is not a jetstream.Msg with its metadata")
	}
}
