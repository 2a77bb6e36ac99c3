package kafka

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
)

// Go sends, a Node @moleculer/channels 0.1.8 (kafkajs) service consumes in
// its own group, with headers and context.
func TestInteropGoToNode(t *testing.T) {
	needKafka(t)
	interop.Need(t)
	ch := unique("interop.go2node")
	node := interop.Consume(t, "--adapter", kafkaURL(), "--channel", ch, "--group", "node-group", "--count", "1",
		"--context", "--partitions", "3")
	p := startPlugin(t, nil)
	ctx := metadata.NewContext(context.Background(), metadata.Metadata{"Tenant": "acme"})
	ctx = channels.WithMeta(ctx, map[string]any{"userId": 42})
	if err := p.SendToChannel(ctx, ch, map[string]any{"id": 7, "name": "John"}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	got := node.Wait(t, 1, 60*time.Second)[0]
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
	needKafka(t)
	interop.Need(t)
	ch := unique("interop.node2go")
	var mu sync.Mutex
	var msgs []*channels.Message
	var infos []*channels.CallInfo
	startPlugin(t, &service{Name: "gosvc", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *channels.Message) error {
		ci, _ := channels.FromContext(ctx)
		mu.Lock()
		msgs, infos = append(msgs, m), append(infos, ci)
		mu.Unlock()
		return nil
	})}})
	interop.Send(t, "--adapter", kafkaURL(), "--channel", ch, "--count", "3", "--payload", `{"name":"Jane"}`,
		"--headers", `{"k":"v"}`, "--meta", `{"tenant":"acme","n":5}`)
	eventually(t, 30*time.Second, "3 messages from Node", func() bool { mu.Lock(); defer mu.Unlock(); return len(msgs) == 3 })
	mu.Lock()
	defer mu.Unlock()
	seen := map[int]bool{}
	for i, m := range msgs {
		var p struct {
			I    int    `json:"i"`
			Name string `json:"name"`
		}
		if err := m.Decode(&p); err != nil || p.Name != "Jane" {
			t.Fatalf("message %d: %+v %v", i, p, err)
		}
		seen[p.I] = true
		if m.Headers["k"] != "v" || m.Attempt != 1 {
			t.Fatalf("headers %v attempt %d", m.Headers, m.Attempt)
		}
		if infos[i].Meta["tenant"] != "acme" || infos[i].Meta["n"] != 5.0 || infos[i].RequestID == "" {
			t.Fatalf("call info %+v", infos[i])
		}
	}
	if len(seen) != 3 {
		t.Fatalf("messages %v", seen)
	}
}

// A Go dead letter keeps the original headers and carries the x-error-*
// headers and x-original-partition; Node reads them as plain headers.
func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	needKafka(t)
	interop.Need(t)
	ch, dlq := unique("interop.dl"), unique("interop.DLQ")
	node := interop.Consume(t, "--adapter", kafkaURL(), "--channel", dlq, "--group", "dlq-reader", "--count", "1")
	startPlugin(t, &service{Name: "failing", Channels: channels.Channels{ch: {MaxRetries: 1,
		Backoff:       broker.ConstantBackoff(50 * time.Millisecond),
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(ctx context.Context, m *channels.Message) error {
			return errors.New("Something happened")
		}}}})
	sender := startPlugin(t, nil)
	if err := sender.SendToChannel(context.Background(), ch, map[string]int{"id": 1}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	got := node.Wait(t, 1, 60*time.Second)[0]
	h := got.Headers
	for k, want := range map[string]string{"x-error-message": "Something happened", "x-error-name": "Error",
		"x-original-channel": ch, "x-original-group": "failing", "x-redelivered-count": "1", "k": "v"} {
		if h[k] != want {
			t.Errorf("%s = %q, want %q", k, h[k], want)
		}
	}
	if h["x-original-partition"] == "" || h["x-original-id"] == "" || h["x-error-timestamp"] == "" {
		t.Errorf("headers %v", h)
	}
	if _, ok := h["x-group"]; ok {
		t.Errorf("the dead letter carries x-group: %v", h)
	}
	if stack, err := base64.StdEncoding.DecodeString(h["x-error-stack"]); err != nil || !strings.Contains(string(stack), "Something happened") {
		t.Errorf("stack %q %v", stack, err)
	}
	var p map[string]any
	if err := json.Unmarshal(got.Payload, &p); err != nil || p["id"] != 1.0 {
		t.Fatalf("payload %s", got.Payload)
	}
}

// A Node dead letter reaches a Go consumer of the dead-letter topic with its
// payload, headers and x-original-channel / -group / -partition.
func TestInteropNodeDeadLetterReadByGo(t *testing.T) {
	needKafka(t)
	interop.Need(t)
	ch, dlq := unique("interop.nodedl"), unique("interop.NODEDLQ")
	dead := &rec{}
	startPlugin(t, &service{Name: "dlq-reader", Channels: channels.Channels{dlq: channels.On(dead.handle)}})
	interop.Consume(t, "--adapter", kafkaURL(), "--channel", ch, "--group", "node-failing", "--fail",
		"--max-retries", "1", "--dead-letter", dlq, "--timeout", "60000")
	interop.Send(t, "--adapter", kafkaURL(), "--channel", ch, "--payload", `{"id":3}`, "--headers", `{"k":"v"}`)
	eventually(t, 60*time.Second, "dead letter from Node", func() bool { return dead.count() == 1 })
	m := dead.msgs[0]
	var p map[string]any
	if err := m.Decode(&p); err != nil || p["id"] != 3.0 {
		t.Fatalf("payload %s", m.Payload)
	}
	if m.Headers[broker.HeaderOriginalChannel] != ch || m.Headers[broker.HeaderOriginalGroup] != "node-failing" ||
		m.Headers[broker.HeaderOriginalPartition] == "" || m.Headers["k"] != "v" {
		t.Fatalf("headers %v", m.Headers)
	}
	if m.Attempt != 1 {
		t.Fatalf("attempt %d: the dead letter has no x-group of the reader, so no attempts are counted", m.Attempt)
	}
}

// Retries stay inside the failing group across languages: the retry copies
// of a failing Node group and of a failing Go group (x-group, attempts in
// x-redelivered-count) are skipped by a good Go group on the same channel,
// which runs the message once.
func TestInteropRetriesStayInTheirGroup(t *testing.T) {
	needKafka(t)
	interop.Need(t)
	ch := unique("interop.retries")
	good := &rec{}
	startPlugin(t, &service{Name: "go-good", Channels: channels.Channels{ch: channels.On(good.handle)}})
	var goRuns sync.Map
	startPlugin(t, &service{Name: "go-failing", Channels: channels.Channels{ch: {MaxRetries: 2,
		Backoff: broker.ConstantBackoff(20 * time.Millisecond),
		Handler: func(ctx context.Context, m *channels.Message) error {
			goRuns.Store(m.Attempt, true)
			return errors.New("fail")
		}}}})
	node := interop.Consume(t, "--adapter", kafkaURL(), "--channel", ch, "--group", "node-good", "--count", "1", "--timeout", "60000")
	interop.Consume(t, "--adapter", kafkaURL(), "--channel", ch, "--group", "node-failing", "--fail",
		"--max-retries", "3", "--timeout", "60000")
	interop.Send(t, "--adapter", kafkaURL(), "--channel", ch, "--payload", `{"id":9}`)
	node.Wait(t, 1, 60*time.Second)
	eventually(t, 30*time.Second, "the Go group's three attempts", func() bool {
		_, third := goRuns.Load(3)
		return third
	})
	eventually(t, 30*time.Second, "one run in the good Go group", func() bool { return good.count() == 1 })
	consistently(t, 2*time.Second, "no retry copy of another group runs in the good Go group", func() bool { return good.count() == 1 })
}
