package interop

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"go-micro.dev/v4/metadata"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// Scenarios are the interop tests every broker runs against a Node
// @moleculer/channels 0.1.8 peer; a broker's test package builds one with
// its broker and calls them from its Test functions. What differs between
// brokers is passed in: here, or in each scenario's expectations.
type Scenarios struct {
	// Adapter is the broker URL as peer.js takes it (--adapter).
	Adapter string
	// Need skips the test (or fails it, when brokers are required) without
	// the broker; the scenarios check the Node peer themselves.
	Need func(t *testing.T)
	// Start starts a plugin on the broker with schema (nil: a sender) and
	// stops it at the end of the test.
	Start func(t *testing.T, schema any) *channels.Plugin
	// Patience bounds how long a message or a dead letter may take to reach
	// a consumer that started with the scenario (a Node one, or the Go reader
	// of Node's dead letters): 30s when zero.
	Patience time.Duration
	// Uses, when set, is told each channel a scenario uses and the groups
	// consuming it, before anything is declared on the broker (to delete
	// what the broker keeps at the end of the test).
	Uses func(t *testing.T, channel string, groups ...string)
}

func (s Scenarios) need(t *testing.T) {
	t.Helper()
	s.Need(t)
	Need(t)
}

func (s Scenarios) patience() time.Duration {
	if s.Patience == 0 {
		return 30 * time.Second
	}
	return s.Patience
}

func (s Scenarios) uses(t *testing.T, channel string, groups ...string) {
	if s.Uses != nil {
		s.Uses(t, channel, groups...)
	}
}

// GoToNode: Go sends with a header, go-micro metadata and $meta; a Node
// consumer (with a Context) reads the payload, the header, a request ID and
// both kinds of meta. peerArgs are more arguments of the Node consumer.
func (s Scenarios) GoToNode(t *testing.T, peerArgs ...string) {
	s.need(t)
	ch := channelstest.Unique("interop.go2node")
	s.uses(t, ch, "node-group")
	node := Consume(t, append([]string{"--adapter", s.Adapter, "--channel", ch, "--group", "node-group", "--count", "1",
		"--context"}, peerArgs...)...)
	p := s.Start(t, nil)
	ctx := metadata.NewContext(context.Background(), metadata.Metadata{"Tenant": "acme"})
	ctx = channels.WithMeta(ctx, map[string]any{"userId": 42})
	if err := p.SendToChannel(ctx, ch, map[string]any{"id": 7, "name": "John"}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	got := node.Wait(t, 1, s.patience())[0]
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

// NodeToGo is what a broker's Go consumer checks of Node's messages beyond
// their payload, headers, first attempt, $meta and request ID.
type NodeToGo struct {
	// Ordered: the messages arrive in the order Node sent them; otherwise in
	// any order, each once.
	Ordered bool
	// Headers are the headers Node sends, and the Go handler reads as
	// strings ({"n":5} as "5"); {"k":"v"} when nil.
	Headers map[string]any
	// IDs: each message has an ID.
	IDs bool
	// Metadata: the $meta fields are in the go-micro metadata of the
	// handler's context too.
	Metadata bool
}

// NodeToGo: Node sends three messages with headers and $meta; a Go consumer
// reads each once, as its first attempt, with the headers, the $meta in its
// call info and a request ID.
func (s Scenarios) NodeToGo(t *testing.T, want NodeToGo) {
	s.need(t)
	ch := channelstest.Unique("interop.node2go")
	s.uses(t, ch, "gosvc")
	got := &channelstest.Recorder{}
	s.Start(t, &channelstest.Service{Name: "gosvc", Channels: channels.Channels{ch: channels.On(got.Handle)}})
	headers := want.Headers
	if headers == nil {
		headers = map[string]any{"k": "v"}
	}
	sent, err := json.Marshal(headers)
	if err != nil {
		t.Fatal(err)
	}
	Send(t, "--adapter", s.Adapter, "--channel", ch, "--count", "3", "--payload", `{"name":"Jane"}`,
		"--headers", string(sent), "--meta", `{"tenant":"acme","n":5}`)
	channelstest.EventuallyTrue(t, 30*time.Second, "3 messages from Node", func() bool { return got.Count() == 3 })
	msgs, infos, mds := got.Calls()
	seen := map[int]bool{}
	for i, m := range msgs {
		var p struct {
			I    int    `json:"i"`
			Name string `json:"name"`
		}
		if err := m.Decode(&p); err != nil || p.Name != "Jane" || (want.Ordered && p.I != i) {
			t.Fatalf("message %d: %+v %v", i, p, err)
		}
		seen[p.I] = true
		for k, v := range headers {
			if m.Headers[k] != fmt.Sprint(v) {
				t.Fatalf("message %d: header %s = %q, want %v; headers %v", i, k, m.Headers[k], v, m.Headers)
			}
		}
		if m.Attempt != 1 || (want.IDs && m.ID == "") {
			t.Fatalf("message %d: headers %v attempt %d id %q", i, m.Headers, m.Attempt, m.ID)
		}
		if infos[i].Meta["tenant"] != "acme" || infos[i].Meta["n"] != 5.0 || infos[i].RequestID == "" {
			t.Fatalf("call info %+v", infos[i])
		}
		if v, _ := mds[i].Get("tenant"); want.Metadata && v != "acme" {
			t.Fatalf("go-micro metadata %v", mds[i])
		}
	}
	if len(seen) != 3 {
		t.Fatalf("messages %v", seen)
	}
}

// GoDeadLetter is what a broker's Go dead letter carries for a Node reader
// beyond what it carries on every broker.
type GoDeadLetter struct {
	// Context: the Node reader takes a Context (implied by Meta).
	Context bool
	// Meta, when set, is the $meta of the failing message, which the Node
	// reader must read back from the dead letter.
	Meta map[string]any
	// Present are more headers that must be set.
	Present []string
	// Absent are headers that must not be there.
	Absent []string
}

// GoDeadLetterReadByNode: a Go group fails a message (header k=v) twice and
// dead-letters it to a queue that a Node consumer reads. The dead letter
// keeps the payload and the original headers and carries x-error-* (the
// stack in base64), x-original-channel, -group and -id, and
// x-redelivered-count 1; Node 0.1.8 reads them as plain headers. It returns
// the channel and the dead-letter queue, for a broker's own checks.
func (s Scenarios) GoDeadLetterReadByNode(t *testing.T, want GoDeadLetter) (ch, dlq string) {
	s.need(t)
	ch, dlq = channelstest.Unique("interop.dl"), channelstest.Unique("interop.DLQ")
	s.uses(t, ch, "failing")
	s.uses(t, dlq, "dlq-reader")
	args := []string{"--adapter", s.Adapter, "--channel", dlq, "--group", "dlq-reader", "--count", "1"}
	if want.Context || want.Meta != nil {
		args = append(args, "--context")
	}
	node := Consume(t, args...)
	s.Start(t, &channelstest.Service{Name: "failing", Channels: channels.Channels{ch: {MaxRetries: 1,
		Backoff:       broker.ConstantBackoff(50 * time.Millisecond),
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(ctx context.Context, m *channels.Message) error {
			return errors.New("Something happened")
		}}}})
	sender := s.Start(t, nil)
	ctx := context.Background()
	if want.Meta != nil {
		ctx = channels.WithMeta(ctx, want.Meta)
	}
	if err := sender.SendToChannel(ctx, ch, map[string]int{"id": 1}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	got := node.Wait(t, 1, s.patience())[0]
	h := got.Headers
	for k, v := range map[string]string{"x-error-message": "Something happened", "x-error-name": "Error",
		"x-original-channel": ch, "x-original-group": "failing", "x-redelivered-count": "1", "k": "v"} {
		if h[k] != v {
			t.Errorf("%s = %q, want %q", k, h[k], v)
		}
	}
	for _, k := range append([]string{"x-original-id", "x-error-timestamp"}, want.Present...) {
		if h[k] == "" {
			t.Errorf("no %s: headers %v", k, h)
		}
	}
	for _, k := range want.Absent {
		if _, ok := h[k]; ok {
			t.Errorf("the dead letter carries %s: %v", k, h)
		}
	}
	if want.Meta != nil {
		var meta map[string]any // want.Meta as it reads back from JSON
		if b, err := json.Marshal(want.Meta); err != nil || json.Unmarshal(b, &meta) != nil {
			t.Fatalf("meta %v: %v", want.Meta, err)
		}
		for k, v := range meta {
			if !reflect.DeepEqual(got.Meta[k], v) {
				t.Errorf("meta %v, want the original $meta %v", got.Meta, meta)
				break
			}
		}
	}
	if stack, err := base64.StdEncoding.DecodeString(h["x-error-stack"]); err != nil || !strings.Contains(string(stack), "Something happened") {
		t.Errorf("stack %q %v", stack, err)
	}
	var p map[string]any
	if err := json.Unmarshal(got.Payload, &p); err != nil || p["id"] != 1.0 {
		t.Fatalf("payload %s", got.Payload)
	}
	return ch, dlq
}

// NodeDeadLetter is what a Node dead letter carries for a Go reader on a
// broker beyond x-original-channel and x-original-group.
type NodeDeadLetter struct {
	// Present are more headers that must be set.
	Present []string
	// KeepsHeaders: the dead letter keeps Node's original headers (without
	// it, keeping them is only logged).
	KeepsHeaders bool
}

// NodeDeadLetterReadByGo: a Node consumer fails a message (header k=v) and
// dead-letters it to a queue that a Go consumer reads: the payload with
// x-original-channel and x-original-group (0.1.8 writes no x-error-*). It
// returns the dead letter, for a broker's own checks.
func (s Scenarios) NodeDeadLetterReadByGo(t *testing.T, want NodeDeadLetter) *channels.Message {
	s.need(t)
	ch, dlq := channelstest.Unique("interop.nodedl"), channelstest.Unique("interop.NODEDLQ")
	s.uses(t, ch, "node-failing")
	s.uses(t, dlq, "dlq-reader")
	dead := &channelstest.Recorder{}
	s.Start(t, &channelstest.Service{Name: "dlq-reader", Channels: channels.Channels{dlq: channels.On(dead.Handle)}})
	Consume(t, "--adapter", s.Adapter, "--channel", ch, "--group", "node-failing", "--fail",
		"--max-retries", "1", "--dead-letter", dlq, "--timeout", "60000")
	Send(t, "--adapter", s.Adapter, "--channel", ch, "--payload", `{"id":3}`, "--headers", `{"k":"v"}`)
	channelstest.EventuallyTrue(t, s.patience(), "dead letter from Node", func() bool { return dead.Count() == 1 })
	msgs, _, _ := dead.Calls()
	m := msgs[0]
	var p map[string]any
	if err := m.Decode(&p); err != nil || p["id"] != 3.0 {
		t.Fatalf("payload %s", m.Payload)
	}
	if m.Headers[broker.HeaderOriginalChannel] != ch || m.Headers[broker.HeaderOriginalGroup] != "node-failing" {
		t.Fatalf("headers %v", m.Headers)
	}
	for _, k := range want.Present {
		if m.Headers[k] == "" {
			t.Fatalf("no %s: headers %v", k, m.Headers)
		}
	}
	if v, kept := m.Headers["k"]; want.KeepsHeaders && v != "v" {
		t.Fatalf("the original headers are lost: %v", m.Headers)
	} else if !want.KeepsHeaders && kept {
		t.Logf("Node 0.1.8 now keeps the original headers: %v", m.Headers)
	}
	return m
}
