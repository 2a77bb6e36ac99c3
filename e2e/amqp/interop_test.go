package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/e2e/interop"
)

// What @moleculer/channels 0.1.8 (AMQP) and this adapter read of each other:
//
//   - Messages, both ways: same exchange (P.n, fanout) and queue (g.P.n,
//     durable, no arguments), payload bytes as they are, headers as AMQP
//     table entries; context headers ($requestID, $meta, ...) both ways.
//   - Retries: both count failed runs in x-redelivered-count (an integer);
//     a group may mix Node and Go members. Node 0.1.8 declares its group
//     queue without arguments: a group shared with Node uses classic queues
//     (QueueType classic on the Go side, or a queue Node declared first,
//     which Go uses as it is). Ours wait their backoff in a retry
//     queue and carry x-group and x-error-*; Node's come back at once.
//   - Dead letters of Go: published to the fanout exchange named like the
//     dead-letter queue Q, to which queue Q is bound: Node reads them as a
//     channel consumer of Q and from queue Q itself; they keep the original
//     headers and carry x-original-*, x-redelivered-count and x-error-*.
//   - Dead letters of Node: published to the fanout exchange DEAD_LETTER (the
//     DeadLettering.ExchangeName), which 0.1.8 binds to queue Q: Go reads them
//     as a channel named like that exchange (every dead letter of every Node
//     channel using it: 0.1.8's fanout has no routing), or from queue Q. They
//     carry only x-original-channel and x-original-group.

// scenarios are the interop tests shared by the brokers, on RabbitMQ. Each
// channel's exchange, its groups' queues and the queue named like it (where
// Go dead letters to it land) are deleted at the end of the test.
var scenarios = interop.Scenarios{
	Adapter: brokerenv.AMQPURL(),
	Need:    needAMQP,
	Start: func(t *testing.T, schema any) *channels.Plugin {
		p, _ := startPlugin(t, schema, nil)
		return p
	},
	Uses: func(t *testing.T, ch string, groups ...string) {
		queues := []string{ch}
		for _, g := range groups {
			queues = append(queues, g+"."+ch)
		}
		cleanup(t, queues, []string{ch})
	},
}

// Go sends, a Node service consumes in its own group (queue
// node-group.P.n), with headers and context.
func TestInteropGoToNode(t *testing.T) { scenarios.GoToNode(t) }

// Node sends headers k=v and n=5 (an AMQP table integer, read as "5"); each
// message has an ID.
func TestInteropNodeToGo(t *testing.T) {
	scenarios.NodeToGo(t, interop.NodeToGo{Headers: map[string]any{"k": "v", "n": 5}, IDs: true})
}

// TestInteropNodeRetriesGoCount: a message Node failed once (x-redelivered-count
// 1, an integer) reaches a Go member of the same group as attempt 2.
func TestInteropNodeRetriesGoCount(t *testing.T) {
	needAMQP(t)
	interop.Need(t)
	ch, group := unique("interop.mixed"), "consumer"
	cleanup(t, []string{group + "." + ch}, []string{ch})
	// The failing Node member alone first: it fails the message and republishes
	// it to the group queue with x-redelivered-count 1.
	failing := interop.Consume(t, "--adapter", brokerenv.AMQPURL(), "--channel", ch, "--group", group, "--count", "100",
		"--fail", "--max-retries", "5", "--timeout", "60000")
	p, _ := startPlugin(t, nil, nil)
	if err := p.SendToChannel(context.Background(), ch, map[string]int{"id": 1}); err != nil {
		t.Fatal(err)
	}
	failing.Wait(t, 1, 30*time.Second)
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: group, Channels: channels.Channels{ch: {Group: group, MaxRetries: 5, Handler: got.Handle}}}, nil)
	eventually(t, 30*time.Second, "the message reaches the Go member", func() bool { return got.Count() >= 1 })
	m := got.All()[0]
	if m.Attempt < 2 || m.Headers["x-redelivered-count"] != itoa(m.Attempt-1) {
		t.Fatalf("attempt %d, x-redelivered-count %q", m.Attempt, m.Headers["x-redelivered-count"])
	}
}

// A Go dead letter, read by a Node channel consumer of Q, keeps the original
// headers ($meta included) and carries x-error-* and x-original-*; queue Q
// itself holds a copy too.
func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	ch, dlq := scenarios.GoDeadLetterReadByNode(t, interop.GoDeadLetter{Meta: map[string]any{"m": 2}})
	// The queue named Q holds the copy too (where 0.1.8 puts its own dead letters).
	raw := rawChannel(t, rawConn(t))
	if d := getOne(t, raw, dlq, 10*time.Second); d.Headers["x-original-channel"] != ch {
		t.Errorf("queue %s: headers %v", dlq, d.Headers)
	}
}

// TestInteropNodeDeadLetterReadByGo: Node 0.1.8 dead-letters to the fanout
// exchange DEAD_LETTER; a Go channel named DEAD_LETTER receives them (with
// every other Node channel's dead letters: filter on x-original-channel).
func TestInteropNodeDeadLetterReadByGo(t *testing.T) {
	needAMQP(t)
	interop.Need(t)
	ch, dlq, group := unique("interop.nodedl"), unique("interop.NODEDLQ"), unique("dl-reader")
	cleanup(t, []string{"g1." + ch, dlq, group + ".DEAD_LETTER"}, []string{ch})
	var mu sync.Mutex
	var mine []*channels.Message
	startPlugin(t, &service{Name: "reader", Channels: channels.Channels{"DEAD_LETTER": {Group: group,
		Handler: func(_ context.Context, m *channels.Message) error {
			if m.Headers["x-original-channel"] == ch {
				mu.Lock()
				mine = append(mine, m)
				mu.Unlock()
			}
			return nil
		}}}}, nil)
	failing := interop.Consume(t, "--adapter", brokerenv.AMQPURL(), "--channel", ch, "--group", "g1", "--count", "1",
		"--fail", "--max-retries", "0", "--dead-letter", dlq, "--timeout", "60000")
	interop.Send(t, "--adapter", brokerenv.AMQPURL(), "--channel", ch, "--payload", `{"a":1}`, "--headers", `{"k":"v"}`)
	failing.Wait(t, 1, 30*time.Second)
	eventually(t, 30*time.Second, "Node's dead letter", func() bool { mu.Lock(); defer mu.Unlock(); return len(mine) == 1 })
	m := mine[0]
	var p map[string]any
	if err := m.Decode(&p); err != nil || p["a"] != 1.0 {
		t.Fatalf("payload %s", m.Payload)
	}
	if m.Headers["x-original-group"] != "g1" || m.Attempt != 1 {
		t.Errorf("headers %v attempt %d", m.Headers, m.Attempt)
	}
	if _, kept := m.Headers["k"]; kept {
		t.Errorf("0.1.8 drops the original headers; got %v", m.Headers)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestInteropGoRetryReadByNode: a retry copy of a Go member (after its
// backoff in the retry queue) reaches a Node member of the group with
// x-redelivered-count 1 and x-group, its headers and payload kept.
func TestInteropGoRetryReadByNode(t *testing.T) {
	needAMQP(t)
	interop.Need(t)
	ch, group := unique("interop.goretry"), "consumer"
	cleanup(t, []string{group + "." + ch}, []string{ch})
	var runs sync.WaitGroup
	runs.Add(1)
	var once sync.Once
	p, _ := startPlugin(t, &service{Name: group, Channels: channels.Channels{ch: {Group: group, MaxRetries: 3,
		Backoff: broker.ConstantBackoff(1500 * time.Millisecond),
		Handler: func(context.Context, *channels.Message) error {
			once.Do(runs.Done)
			return errors.New("Something happened")
		}}}}, []chamqp.Option{chamqp.WithQueueType(chamqp.QueueClassic)}) // shared with a Node member
	sender, _ := startPlugin(t, nil, nil)
	if err := sender.SendToChannel(context.Background(), ch, map[string]int{"id": 3}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	runs.Wait()
	// The copy waits in the retry queue: stop the Go member, a Node member takes over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	node := interop.Consume(t, "--adapter", brokerenv.AMQPURL(), "--channel", ch, "--group", group, "--count", "1")
	got := node.Wait(t, 1, 30*time.Second)[0]
	if got.Headers["x-redelivered-count"] != "1" || got.Headers["x-group"] != group || got.Headers["k"] != "v" ||
		got.Headers["x-error-message"] != "Something happened" {
		t.Fatalf("headers %v", got.Headers)
	}
	var pl map[string]any
	if err := json.Unmarshal(got.Payload, &pl); err != nil || pl["id"] != 3.0 {
		t.Fatalf("payload %s", got.Payload)
	}
}
