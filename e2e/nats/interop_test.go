package nats

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/interop"
	"github.com/microchannels/channels/jetstream"
)

// scenarios are the interop tests shared by the brokers, on NATS JetStream.
var scenarios = interop.Scenarios{
	Adapter: natsURL(),
	Need:    needNATS,
	Start:   func(t *testing.T, schema any) *channels.Plugin { return startPlugin(t, timings, schema) },
}

// Go sends, a Node @moleculer/channels 0.1.8 service consumes (its own
// push durable, in its own group), with headers and context.
func TestInteropGoToNode(t *testing.T) { scenarios.GoToNode(t) }

// Node sends, Go consumes in order, with headers and context.
func TestInteropNodeToGo(t *testing.T) { scenarios.NodeToGo(t, interop.NodeToGo{Ordered: true}) }

// A Go dead letter keeps the original headers and carries the x-error-*
// headers; Node 0.1.8 reads all of them as plain headers.
func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	scenarios.GoDeadLetterReadByNode(t, interop.GoDeadLetter{})
}

// A Node 0.1.8 dead letter reaches a Go consumer of the dead-letter queue:
// the payload and x-original-channel / x-original-group, nothing else
// (0.1.8 replaces the headers and writes no x-error-*).
func TestInteropNodeDeadLetterReadByGo(t *testing.T) {
	m := scenarios.NodeDeadLetterReadByGo(t, interop.NodeDeadLetter{})
	if broker.ErrorFromHeaders(m.Headers) != nil {
		t.Logf("Node 0.1.8 now writes x-error-* headers: %v", m.Headers)
	}
}

// Node 0.1.8 makes a push durable named after its group: a Go member of
// the same group is refused with ErrPushConsumer (pull and push consumers
// cannot share a durable); Go and Node services use different groups.
func TestInteropSameGroupRefused(t *testing.T) {
	needNATS(t)
	interop.Need(t)
	ch, group := unique("interop.samegroup"), unique("shared-group")
	interop.Consume(t, "--adapter", natsURL(), "--channel", ch, "--group", group, "--timeout", "60000")
	p := newPlugin(t, timings)
	if err := p.Register(&service{Name: "gosvc", Channels: channels.Channels{ch: {Group: group,
		Handler: func(context.Context, *channels.Message) error { return nil }}}}); err != nil {
		t.Fatal(err)
	}
	err := p.Start(context.Background())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	}
	if !errors.Is(err, jetstream.ErrPushConsumer) {
		t.Fatalf("Start with Node's group: %v, want ErrPushConsumer", err)
	}
}
