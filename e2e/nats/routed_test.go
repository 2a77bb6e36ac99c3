package nats

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// routedOut is a message sent with broker.PublishOptions.Routed.
func routedOut(payload string) *broker.Outgoing {
	o, _ := broker.NewPublishOptions()
	o.Routed = true
	return &broker.Outgoing{Payload: []byte(payload), Options: o}
}

// A routed send to a subject no stream stores fails with ErrPublish and
// ErrNotFound and creates no stream (a plain send would create one); once
// a stream stores the subject, it is stored.
func TestRoutedSend(t *testing.T) {
	a := toolAdapter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	channel := unique("routed")
	nc, err := nats.Connect(natsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	jsc, err := js.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if name, err := jsc.StreamNameBySubject(context.Background(), channel); err == nil {
			_ = jsc.DeleteStream(context.Background(), name)
		}
	})
	noStream := func() {
		t.Helper()
		if name, err := jsc.StreamNameBySubject(ctx, channel); err == nil {
			t.Fatalf("a routed send created stream %q", name)
		}
	}
	notFound := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, broker.ErrPublish) || !errors.Is(err, broker.ErrNotFound) {
			t.Fatalf("%s: got %v, want an error wrapping ErrPublish and ErrNotFound", what, err)
		}
	}
	notFound("send", a.Publish(ctx, channel, routedOut("lost")))
	noStream()
	errs := a.PublishBatch(ctx, channel, []*broker.Outgoing{routedOut("a"), routedOut("b")})
	if len(errs) != 2 {
		t.Fatalf("batch: %v, want two errors", errs)
	}
	for _, err := range errs {
		notFound("batch", err)
	}
	noStream()

	if err := a.Publish(ctx, channel, &broker.Outgoing{Payload: []byte("plain")}); err != nil {
		t.Fatal(err)
	}
	name, err := jsc.StreamNameBySubject(ctx, channel)
	if err != nil {
		t.Fatalf("a plain send made no stream: %v", err)
	}
	if err := a.Publish(ctx, channel, routedOut("kept")); err != nil {
		t.Fatalf("routed send with a stream: %v", err)
	}
	if errs := a.PublishBatch(ctx, channel, []*broker.Outgoing{routedOut("c"), routedOut("d")}); errs != nil {
		t.Fatalf("routed batch with a stream: %v", errs)
	}
	s, err := jsc.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 4 {
		t.Fatalf("stream holds %v messages (%v), want 4", info, err)
	}
}
