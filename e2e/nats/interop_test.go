package nats

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

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/interop"
	"github.com/microchannels/channels/jetstream"
)

// Go sends, a Node @moleculer/channels 0.1.8 service consumes (its own
// push durable, in its own group), with headers and context.
func TestInteropGoToNode(t *testing.T) {
	needNATS(t)
	interop.Need(t)
	ch := unique("interop.go2node")
	node := interop.Consume(t, "--adapter", natsURL(), "--channel", ch, "--group", "node-group", "--count", "1", "--context")
	p := startPlugin(t, timings, nil)
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

// Node sends, Go consumes, with headers and context.
func TestInteropNodeToGo(t *testing.T) {
	needNATS(t)
	interop.Need(t)
	ch := unique("interop.node2go")
	var mu sync.Mutex
	var msgs []*channels.Message
	var infos []*channels.CallInfo
	startPlugin(t, timings, &service{Name: "gosvc", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *channels.Message) error {
		ci, _ := channels.FromContext(ctx)
		mu.Lock()
		msgs, infos = append(msgs, m), append(infos, ci)
		mu.Unlock()
		return nil
	})}})
	interop.Send(t, "--adapter", natsURL(), "--channel", ch, "--count", "3", "--payload", `{"name":"Jane"}`,
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
	}
}

// A Go dead letter keeps the original headers and carries the x-error-*
// headers; Node 0.1.8 reads all of them as plain headers.
func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	needNATS(t)
	interop.Need(t)
	ch, dlq := unique("interop.dl"), unique("interop.DLQ")
	node := interop.Consume(t, "--adapter", natsURL(), "--channel", dlq, "--group", "dlq-reader", "--count", "1")
	startPlugin(t, timings, &service{Name: "failing", Channels: channels.Channels{ch: {MaxRetries: 1,
		Backoff:       broker.ConstantBackoff(50 * time.Millisecond),
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(ctx context.Context, m *channels.Message) error {
			return errors.New("Something happened")
		}}}})
	sender := startPlugin(t, timings, nil)
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

// A Node 0.1.8 dead letter reaches a Go consumer of the dead-letter queue:
// the payload and x-original-channel / x-original-group, nothing else
// (0.1.8 replaces the headers and writes no x-error-*).
func TestInteropNodeDeadLetterReadByGo(t *testing.T) {
	needNATS(t)
	interop.Need(t)
	ch, dlq := unique("interop.nodedl"), unique("interop.NODEDLQ")
	dead := &rec{}
	startPlugin(t, timings, &service{Name: "dlq-reader", Channels: channels.Channels{dlq: channels.On(dead.handle)}})
	interop.Consume(t, "--adapter", natsURL(), "--channel", ch, "--group", "node-failing", "--fail",
		"--max-retries", "1", "--dead-letter", dlq, "--timeout", "60000")
	interop.Send(t, "--adapter", natsURL(), "--channel", ch, "--payload", `{"id":3}`, "--headers", `{"k":"v"}`)
	eventually(t, 30*time.Second, "dead letter from Node", func() bool { return dead.count() == 1 })
	m := dead.msgs[0]
	var p map[string]any
	if err := m.Decode(&p); err != nil || p["id"] != 3.0 {
		t.Fatalf("payload %s", m.Payload)
	}
	if m.Headers[broker.HeaderOriginalChannel] != ch || m.Headers[broker.HeaderOriginalGroup] != "node-failing" {
		t.Fatalf("headers %v", m.Headers)
	}
	if _, kept := m.Headers["k"]; kept {
		t.Logf("Node 0.1.8 now keeps the original headers: %v", m.Headers)
	}
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
