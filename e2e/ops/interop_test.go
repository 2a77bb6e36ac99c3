package ops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/e2e/interop"
)

// nodeURL is the broker URL as peer.js takes it ("" where the interop
// tests do not drive Node: the Redis Cluster).
func nodeURL(tg target) string {
	switch tg.name {
	case "redis":
		return strings.TrimSuffix(brokerenv.RedisURL(), "/0")
	case "redis-cluster":
		return ""
	}
	return tg.url()
}

// Dead letters written by a Node @moleculer/channels 0.1.8 service (only
// x-original-channel and x-original-group; on RabbitMQ through its
// DEAD_LETTER exchange into the queue) are listed by dlq ls, with no
// error and no attempt count, and dlq replay sends them back to their
// channel, where a Go consumer receives them as first attempts.
// The Redis Cluster has no row: the interop peer does not drive Node there.
func TestNodeDeadLetters(t *testing.T) {
	eachTargetBut(t, "redis-cluster", func(t *testing.T, tg target) {
		url := nodeURL(tg)
		interop.Need(t)
		ns := strings.ReplaceAll(channelstest.Unique("opsnode"), ".", "-")
		full, queue := ns+".orders", ns+".NODE_DLQ"
		ops := opsAdapter(t, tg.url())
		// Cleanup: the channel with its groups (Node's too), the queue,
		// Node's dead-letter exchange (RabbitMQ).
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if g, ok := ops.(interface {
				RemoveGroup(ctx context.Context, channel string, groups ...string) error
			}); ok {
				_ = g.RemoveGroup(ctx, full, "node-failing")
			}
		})
		removeChannels(t, ops, full, queue, ns+"."+broker.DefaultDeadLetterExchange)

		// Node fails the message (one retry) and dead-letters it; the Node
		// service is killed at the end of the subtest.
		t.Run("node", func(t *testing.T) {
			interop.Consume(t, "--adapter", url, "--namespace", ns, "--channel", "orders", "--group", "node-failing", "--fail",
				"--max-retries", "1", "--dead-letter", "NODE_DLQ", "--timeout", "60000")
			interop.Send(t, "--adapter", url, "--namespace", ns, "--channel", "orders", "--payload", `{"id":3}`, "--headers", `{"k":"v"}`)
			channelstest.EventuallyTrue(t, 60*time.Second, "Node's dead letter in "+queue, func() bool {
				es, err := dlq.List(context.Background(), ops, queue, dlq.Filter{})
				return err == nil && len(es) > 0
			})
		})
		if t.Failed() {
			return
		}
		es := decode[[]dlq.Entry](t, mustRunNS(t, tg.url(), ns, "--queue", "NODE_DLQ", "--json", "dlq", "ls", "--channel", "orders"))
		if len(es) == 0 {
			t.Fatalf("dlq ls --channel orders lists none of Node's dead letters")
		}
		if len(es) > 1 {
			t.Logf("Node dead-lettered the message %d times", len(es))
		}
		for _, e := range es {
			if e.OriginalChannel != full || e.OriginalGroup != "node-failing" || e.ErrorMessage != "" || e.Attempts != 0 ||
				idOf(t, e) != 3 {
				t.Fatalf("Node's dead letter: %+v", e)
			}
		}
		out := mustRunNS(t, tg.url(), ns, "--queue", "NODE_DLQ", "dlq", "ls")
		if !strings.Contains(out, es[0].ID) || !strings.Contains(out, full) {
			t.Fatalf("dlq ls table:\n%s", out)
		}

		// A Go service consumes the channel; the replay reaches it.
		got := &channelstest.Recorder{}
		p := channelstest.StartPlugin(t, tg.url(), &channelstest.Service{Name: "gosvc",
			Channels: channels.Channels{"orders": {Group: "gosvc", Handler: got.Handle}}}, channels.WithNamespace(ns))
		removeChannels(t, p.Adapter(), full)
		out = mustRunNS(t, tg.url(), ns, "--queue", "NODE_DLQ", "dlq", "replay", "--channel", "orders")
		if !strings.Contains(out, "replayed ") || !strings.Contains(out, " of "+queue) {
			t.Fatalf("replay:\n%s", out)
		}
		channelstest.EventuallyTrue(t, 30*time.Second, "the Go consumer receives Node's dead letter", func() bool { return got.Count() == len(es) })
		for _, m := range got.All() {
			var u user
			if err := m.Decode(&u); err != nil || u.ID != 3 || m.Attempt != 1 {
				t.Fatalf("replayed: %s attempt %d: %v", m.Payload, m.Attempt, err)
			}
			for k := range m.Headers {
				if strings.HasPrefix(k, "x-original-") || strings.HasPrefix(k, "x-error-") {
					t.Errorf("replayed message carries %s: %v", k, m.Headers)
				}
			}
			trail := dlq.ParseTrail(m.Headers[dlq.HeaderReplayedFrom])
			if len(trail) != 1 || trail[0].Queue != queue || trail[0].Error != "" {
				t.Errorf("%s = %q", dlq.HeaderReplayedFrom, m.Headers[dlq.HeaderReplayedFrom])
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		left, err := dlq.List(ctx, opsAdapter(t, tg.url()), queue, dlq.Filter{Channel: full})
		if err != nil || len(left) != 0 {
			t.Fatalf("left in %s: %d %v", queue, len(left), err)
		}
	})
}

// mustRunNS runs the command in namespace ns and fails the test unless it
// exits 0.
func mustRunNS(t testing.TB, url, ns string, args ...string) string {
	t.Helper()
	code, out, errs := runCommand(url, ns, args...)
	if code != 0 {
		t.Fatalf("channels %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
	}
	return out
}
