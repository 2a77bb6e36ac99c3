package redis

import (
	"context"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/interop"
)

// nodeURL is the Redis URL as @moleculer/channels takes it (no database path).
func nodeURL() string { return strings.TrimSuffix(redisURL(), "/0") }

// scenarios are the interop tests shared by the brokers, on Redis.
var scenarios = interop.Scenarios{
	Adapter: nodeURL(),
	Need:    needRedis,
	Start:   func(t *testing.T, schema any) *channels.Plugin { return startPlugin(t, crashTimings, schema) },
}

// Go sends, a Node @moleculer/channels 0.1.8 service consumes in its own
// group, with headers and context.
func TestInteropGoToNode(t *testing.T) { scenarios.GoToNode(t) }

// Node sends, Go reads the messages in order; the $meta fields are in the
// go-micro metadata too.
func TestInteropNodeToGo(t *testing.T) {
	scenarios.NodeToGo(t, interop.NodeToGo{Ordered: true, Metadata: true})
}

// A Go dead letter keeps the original headers and carries the x-error-*
// headers and x-original-id (the failed entry); Node reads them as plain
// headers, in a handler taking a Context.
func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	scenarios.GoDeadLetterReadByNode(t, interop.GoDeadLetter{Context: true})
}

// TestInteropTraceCrossesANodeHop: a Go send starts a trace; a Node
// @moleculer/channels service forwards the message with its headers to a
// second channel; the Go handler of that channel continues the same trace,
// its span a child of the original send (the Node hop keeps traceparent).
func TestInteropTraceCrossesANodeHop(t *testing.T) {
	needRedis(t)
	interop.Need(t)
	first, second := unique("interop.trace.first"), unique("interop.trace.second")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	got := make(chan struct{}, 1)
	startPlugin(t, crashTimings, &service{Name: "tracer", Channels: channels.Channels{second: channels.On(
		func(context.Context, *channels.Message) error { got <- struct{}{}; return nil })}},
		channels.WithTracerProvider(tp))
	node := interop.Consume(t, "--adapter", nodeURL(), "--channel", first, "--group", "node-hop", "--count", "1",
		"--forward", second)
	sender := startPlugin(t, crashTimings, nil, channels.WithTracerProvider(tp))
	if err := sender.SendToChannel(context.Background(), first, map[string]int{"id": 1}); err != nil {
		t.Fatal(err)
	}
	if tp := node.Wait(t, 1, 30*time.Second)[0].Headers["traceparent"]; tp == "" {
		t.Fatal("the Node service received no traceparent header")
	}
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the forwarded message did not arrive")
	}
	var send, process sdktrace.ReadOnlySpan
	eventually(t, 5*time.Second, "spans ended", func() bool {
		for _, sp := range rec.Ended() {
			switch sp.Name() {
			case "send " + first:
				send = sp
			case "process " + second:
				process = sp
			}
		}
		return send != nil && process != nil
	})
	if process.SpanContext().TraceID() != send.SpanContext().TraceID() || process.Parent().SpanID() != send.SpanContext().SpanID() {
		t.Fatalf("process span %v (parent %v) is not a child of send span %v", process.SpanContext(), process.Parent(), send.SpanContext())
	}
}
