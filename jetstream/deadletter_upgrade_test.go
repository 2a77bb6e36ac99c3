package jetstream_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

// An existing dead-letter stream (unbounded, shared, holding dead letters
// from before) keeps its limits and its messages when a member subscribes
// a channel dead-lettering into it: the dead-letter defaults are for a
// stream the adapter creates.
func TestDeadLetterStreamExistingKeepsLimits(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "SHARED_DLQ", Subjects: []string{"dlq.>"}, MaxMsgs: -1}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := j.Publish(ctx, "dlq.old", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	o := fast
	o.DeadLetterStream = jetstream.StreamOptions{Name: "SHARED_DLQ", Subjects: []string{"dlq.>"}}
	fail := func(context.Context, *channels.Message) error { return channels.Permanent(errBoom) }
	startPlugin(t, newAdapter(t, url, o), &service{Name: "up", Channels: channels.Channels{
		"orders.upgraded": {Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "dlq.orders"}},
	}})
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	if err := snd.SendToChannel(ctx, "orders.upgraded", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the new dead letter joins the old ones", func() bool { return streamMsgs(j, "SHARED_DLQ") == 6 })
	st, err := j.Stream(ctx, "SHARED_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != 0 || c.MaxMsgs != -1 {
		t.Fatalf("SHARED_DLQ: MaxAge %s MaxMsgs %d: want its own limits (0, -1)", c.MaxAge, c.MaxMsgs)
	}
	if st.CachedInfo().State.FirstSeq != 1 {
		t.Fatalf("SHARED_DLQ: first sequence %d: older dead letters were removed", st.CachedInfo().State.FirstSeq)
	}
}

// DeadLetterStream MaxMsgs -1 asks for a dead-letter stream without a
// message bound; the created stream has none.
func TestDeadLetterStreamExplicitUnbounded(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	o := fast
	o.DeadLetterStream = jetstream.StreamOptions{MaxMsgs: -1}
	fail := func(context.Context, *channels.Message) error { return channels.Permanent(errBoom) }
	startPlugin(t, newAdapter(t, url, o), &service{Name: "unb", Channels: channels.Channels{
		"orders.unbounded": {Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "UNB_DLQ"}},
	}})
	st, err := j.Stream(context.Background(), "UNB_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxMsgs != -1 || c.MaxAge != jetstream.DefaultDeadLetterMaxAge {
		t.Fatalf("UNB_DLQ: MaxAge %s MaxMsgs %d: want the default MaxAge and no message bound", c.MaxAge, c.MaxMsgs)
	}
}
