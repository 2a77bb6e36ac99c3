package jetstream_test

import (
	"context"
	"testing"
	"time"

	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/jetstream"
)

// A sender whose channel was stored by another member's shared stream
// (ORDERS on orders.>) does not create a stream of its own shape
// (orders_created on orders.created) when that stream is removed: the
// send fails, and the subject is left for the stream's owner.
func TestSendDoesNotTakeOverSharedStream(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	snd := startPlugin(t, newAdapter(t, url, fast), nil)
	if err := snd.SendToChannel(ctx, "orders.created", 1); err != nil {
		t.Fatal(err)
	}
	if err := j.DeleteStream(ctx, "ORDERS"); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := snd.SendToChannel(sctx, "orders.created", 2); err == nil {
		t.Fatal("a send to a channel whose shared stream is gone succeeded")
	}
	if n := streamMsgs(j, "orders_created"); n != -1 {
		t.Fatalf("the sender created a stream orders_created of its own (%d messages)", n)
	}
}

// A send that finds no stream answering never updates an existing stream
// with the sender's options (MaxAge, subjects): the stream's owner
// decides its shape.
func TestSendDoesNotUpdateExistingStream(t *testing.T) {
	url, _ := startServer(t)
	_, j := jsOn(t, url)
	ctx := context.Background()
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "kept_topic", Subjects: []string{"kept.other"}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	o := fast
	o.Stream = jetstream.StreamOptions{MaxAge: 10 * time.Minute}
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = snd.SendToChannel(sctx, "kept.topic", 1) // fails: no stream stores kept.topic
	st, err := j.Stream(ctx, "kept_topic")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != time.Hour || len(c.Subjects) != 1 || c.Subjects[0] != "kept.other" {
		t.Fatalf("kept_topic updated by a sender: MaxAge %s subjects %v", c.MaxAge, c.Subjects)
	}
}
