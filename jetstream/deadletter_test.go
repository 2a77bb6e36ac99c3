package jetstream_test

import (
	"context"
	"testing"
	"time"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

// The dead-letter stream has options of its own: a channel stream with
// interest retention does not make the dead-letter stream one (a stream
// with interest retention and no consumer acknowledges a message without
// storing it), and an existing dead-letter stream with interest retention
// is turned to limits retention. The new one gets the default dead-letter
// bounds (an unbounded dead-letter stream could fill the store); the
// existing one keeps its own.
func TestDeadLetterStreamOwnOptions(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	// A dead-letter stream made with interest retention beforehand.
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "OLD_DLQ", Subjects: []string{"OLD_DLQ"}, Retention: js.InterestPolicy}); err != nil {
		t.Fatal(err)
	}
	o := fast
	o.Stream = jetstream.StreamOptions{Retention: js.InterestPolicy, MaxAge: time.Hour, MaxMsgs: 100}
	fail := func(context.Context, *channels.Message) error { return channels.Permanent(errBoom) }
	startPlugin(t, newAdapter(t, url, o), &service{Name: "dl", Channels: channels.Channels{
		"orders.created": {Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "NEW_DLQ"}},
		"orders.paid":    {Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "OLD_DLQ"}},
	}})
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	for _, ch := range []string{"orders.created", "orders.paid"} {
		if err := snd.SendToChannel(ctx, ch, map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, dlq := range []string{"NEW_DLQ", "OLD_DLQ"} {
		eventually(t, 10*time.Second, dlq+" holds the dead letter", func() bool { return streamMsgs(j, dlq) == 1 })
		st, err := j.Stream(ctx, dlq)
		if err != nil {
			t.Fatal(err)
		}
		// Not the channel stream's bounds: the defaults for the new one,
		// the existing one's own (none).
		wantAge, wantMsgs := jetstream.DefaultDeadLetterMaxAge, int64(jetstream.DefaultDeadLetterMaxMsgs)
		if dlq == "OLD_DLQ" {
			wantAge, wantMsgs = 0, -1
		}
		if c := st.CachedInfo().Config; c.Retention != js.LimitsPolicy || c.MaxAge != wantAge || c.MaxMsgs != wantMsgs {
			t.Fatalf("%s: retention %v MaxAge %s MaxMsgs %d: want limits retention, MaxAge %s, MaxMsgs %d",
				dlq, c.Retention, c.MaxAge, c.MaxMsgs, wantAge, wantMsgs)
		}
	}
}

// DeadLetterStream options shape the dead-letter stream; the bounds it
// leaves unset take the dead-letter defaults.
func TestDeadLetterStreamOptionsApply(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	fail := func(context.Context, *channels.Message) error { return channels.Permanent(errBoom) }
	o := fast
	o.Stream = jetstream.StreamOptions{Retention: js.InterestPolicy}
	o.DeadLetterStream = jetstream.StreamOptions{MaxAge: 48 * time.Hour}
	startPlugin(t, newAdapter(t, url, o), &service{Name: "dl2", Channels: channels.Channels{
		"orders.sent": {Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "OWN_DLQ"}},
	}})
	st, err := j.Stream(ctx, "OWN_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != 48*time.Hour || c.Retention != js.LimitsPolicy || c.MaxMsgs != jetstream.DefaultDeadLetterMaxMsgs {
		t.Fatalf("OWN_DLQ: %+v", c)
	}
}
