package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go-micro.dev/v4/metadata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/interop"
)

// nodeURL is the Redis URL as @moleculer/channels takes it (no database path).
func nodeURL() string { return strings.TrimSuffix(redisURL(), "/0") }

func TestInteropGoToNode(t *testing.T) {
	needRedis(t)
	interop.Need(t)
	ch := unique("interop.go2node")
	node := interop.Consume(t, "--adapter", nodeURL(), "--channel", ch, "--group", "node-group", "--count", "1", "--context")
	p := startPlugin(t, crashTimings, nil)
	ctx := metadata.NewContext(context.Background(), metadata.Metadata{"Tenant": "acme"})
	ctx = channels.WithMeta(ctx, map[string]any{"userId": 42})
	if err := p.SendToChannel(ctx, ch, map[string]any{"id": 7, "name": "John"}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	got := node.Wait(t, 1, 30*time.Second)[0]
	var payload map[string]any
	if err := json.Unmarshal(got.Payload, &payload); err != nil || payload["id"] != 7.0 || payload["name"] != "John" {
		t.Fatalf("payload %s", got.Payload)
	}
	if got.Headers["k"] != "v" || got.Headers["$requestID"] == "" {
		t.Fatalf("headers %v", got.Headers)
	}
	if got.Meta["Tenant"] != "acme" || got.Meta["userId"] != 42.0 {
		t.Fatalf("meta %v", got.Meta)
	}
}

func TestInteropNodeToGo(t *testing.T) {
	needRedis(t)
	interop.Need(t)
	ch := unique("interop.node2go")
	var mu sync.Mutex
	var msgs []*channels.Message
	var infos []*channels.CallInfo
	var mds []metadata.Metadata
	startPlugin(t, crashTimings, &service{Name: "gosvc", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *channels.Message) error {
		ci, _ := channels.FromContext(ctx)
		md, _ := metadata.FromContext(ctx)
		mu.Lock()
		msgs, infos, mds = append(msgs, m), append(infos, ci), append(mds, md)
		mu.Unlock()
		return nil
	})}})
	interop.Send(t, "--adapter", nodeURL(), "--channel", ch, "--count", "3", "--payload", `{"name":"Jane"}`,
		"--headers", `{"k":"v"}`, "--meta", `{"tenant":"acme","n":5}`)
	eventually(t, 30*time.Second, "3 messages from Node", func() bool { mu.Lock(); defer mu.Unlock(); return len(msgs) == 3 })
	mu.Lock()
	defer mu.Unlock()
	for i, m := range msgs {
		var p struct {
			I    int    `json:"i"`
			Name string `json:"name"`
		}
		if err := m.Decode(&p); err != nil || p.Name != "Jane" || p.I != i {
			t.Fatalf("message %d: %+v %v", i, p, err)
		}
		if m.Headers["k"] != "v" || m.Attempt != 1 {
			t.Fatalf("headers %v attempt %d", m.Headers, m.Attempt)
		}
		if infos[i].Meta["tenant"] != "acme" || infos[i].Meta["n"] != 5.0 || infos[i].RequestID == "" {
			t.Fatalf("call info %+v", infos[i])
		}
		if v, _ := mds[i].Get("tenant"); v != "acme" {
			t.Fatalf("go-micro metadata %v", mds[i])
		}
	}
}

func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	needRedis(t)
	interop.Need(t)
	ch, dlq := unique("interop.dl"), unique("interop.DLQ")
	node := interop.Consume(t, "--adapter", nodeURL(), "--channel", dlq, "--group", "dlq-reader", "--count", "1", "--context")
	startPlugin(t, crashTimings, &service{Name: "failing", Channels: channels.Channels{ch: {MaxRetries: 1,
		Backoff:       broker.ConstantBackoff(50 * time.Millisecond),
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(ctx context.Context, m *channels.Message) error {
			return errors.New("Something happened")
		}}}})
	sender := startPlugin(t, crashTimings, nil)
	if err := sender.SendToChannel(context.Background(), ch, map[string]int{"id": 1}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	got := node.Wait(t, 1, 30*time.Second)[0]
	h := got.Headers
	for k, want := range map[string]string{"x-error-message": "Something happened", "x-error-name": "Error",
		"x-original-channel": ch, "x-original-group": "failing", "x-redelivered-count": "1", "k": "v"} {
		if h[k] != want {
			t.Errorf("%s = %q, want %q", k, h[k], want)
		}
	}
	if h["x-original-id"] == "" || h["x-error-timestamp"] == "" {
		t.Errorf("headers %v", h)
	}
	if stack, err := base64.StdEncoding.DecodeString(h["x-error-stack"]); err != nil || !strings.Contains(string(stack), "Something happened") {
		t.Errorf("stack %q %v", stack, err)
	}
	var p map[string]any
	if err := json.Unmarshal(got.Payload, &p); err != nil || p["id"] != 1.0 {
		t.Fatalf("payload %s", got.Payload)
	}
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
