package redis

import (
	"context"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/redis"
)

var crashTimings = redis.ChannelOptions{MinIdleTime: time.Second, ClaimInterval: 50 * time.Millisecond, ReadTimeout: 500 * time.Millisecond}

// TestMain runs the consumer child process when the test binary is re-executed by TestRedeliveryAfterKill.
func TestMain(m *testing.M) { channelstest.ChildMain(m, runChild) }

// runChild consumes channel|group and blocks in the handler forever, after
// printing STARTED: the parent kills it there.
func runChild(spec string) int {
	parts := strings.SplitN(spec, "|", 2)
	a, err := redis.New(os.Getenv("CHANNELS_REDIS_URL_CHILD"), redis.WithChannelOptions(crashTimings))
	if err != nil {
		return 2
	}
	p, err := channels.New(channels.WithAdapter(a), channels.WithNodeID("crash-child"))
	if err != nil {
		return 2
	}
	s := &service{Name: "crash", Channels: channels.Channels{parts[0]: {Group: parts[1],
		Handler: func(ctx context.Context, m *channels.Message) error {
			os.Stdout.WriteString("STARTED " + m.ID + "\n")
			select {} // never acks
		}}}}
	if err := p.Register(s); err != nil {
		return 2
	}
	if err := p.Start(context.Background()); err != nil {
		return 2
	}
	os.Stdout.WriteString("READY\n")
	select {}
}

// TestRedeliveryAfterKill: a consumer killed during a handler run uses up
// no attempt: the message comes back to another member as attempt 1, also
// with NoRetries (where a used-up attempt would drop it unrun).
func TestRedeliveryAfterKill(t *testing.T) {
	t.Run("retries", func(t *testing.T) { testRedeliveryAfterKill(t) })
	t.Run("NoRetries", func(t *testing.T) {
		testRedeliveryAfterKill(t, channels.WithMaxRetries(channels.NoRetries))
	})
}

func testRedeliveryAfterKill(t *testing.T, opts ...channels.Option) {
	needRedis(t)
	ch, group := unique("crash.topic"), unique("crash-group")

	child := channelstest.StartChild(t, ch+"|"+group, "CHANNELS_REDIS_URL_CHILD="+redisURL())
	child.WaitLine(t, "READY")

	sender := startPlugin(t, crashTimings, nil)
	if err := sender.SendToChannel(context.Background(), ch, map[string]int{"order": 1}); err != nil {
		t.Fatal(err)
	}
	started := child.WaitLine(t, "STARTED ")
	id := strings.TrimPrefix(started, "STARTED ")
	child.Kill(t)

	// A second member of the group gets the unacked message after MinIdleTime, as attempt 1.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	var mu sync.Mutex
	var got []*channels.Message
	startPlugin(t, crashTimings, &service{Name: "crash", Channels: channels.Channels{ch: {Group: group,
		Handler: func(ctx context.Context, m *channels.Message) error {
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
			return nil
		}}}}, append(opts, channels.WithNodeID("crash-survivor"), channels.WithMeterProvider(mp))...)
	eventually(t, 15*time.Second, "redelivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	consistently(t, 1500*time.Millisecond, "exactly one redelivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if got[0].ID != id || got[0].Attempt != 1 {
		t.Fatalf("redelivered id %s attempt %d, want id %s attempt 1", got[0].ID, got[0].Attempt, id)
	}
	eventually(t, 5*time.Second, "crash redelivery counted", func() bool {
		return counter(t, reader, channels.MetricRedelivered) == 1 && counter(t, reader, channels.MetricReceived) == 1
	})
}

// counter sums a counter of the plugin's metrics.
func counter(t *testing.T, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, p := range s.DataPoints {
					n += p.Value
				}
			}
		}
	}
	return n
}

// TestPoisonPillIsBoundedByMaxDeliveries: a message whose runs never end
// (here: delivered to a consumer that vanished, three times) is given up
// without running once its deliveries pass MaxDeliveries, and runs as
// attempt 1 while they do not.
func TestPoisonPillIsBoundedByMaxDeliveries(t *testing.T) {
	needRedis(t)
	ctx := context.Background()
	raw := rawClient(t)
	for _, tc := range []struct {
		name          string
		maxDeliveries int
		wantRun       bool
	}{{"over the limit", 2, false}, {"within the default limit", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ch, group, dlq := unique("pill.topic"), unique("pill-group"), unique("pill.dlq")
			if err := raw.XGroupCreateMkStream(ctx, ch, group, "$").Err(); err != nil {
				t.Fatal(err)
			}
			id, err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `{"n":1}`}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			// Three deliveries to a consumer that never settles them (as if
			// each run killed its process), the last one idle long ago.
			if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "ghost",
				Streams: []string{ch, ">"}, Count: 1}).Err(); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := raw.XClaim(ctx, &goredis.XClaimArgs{Stream: ch, Group: group, Consumer: "ghost",
					Messages: []string{id}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := raw.Do(ctx, "XCLAIM", ch, group, "ghost", 0, id, "IDLE", 60000, "JUSTID").Err(); err != nil {
				t.Fatal(err)
			}
			var runs atomic.Int32
			var attempt atomic.Int32
			startPlugin(t, crashTimings, &service{Name: "pill", Channels: channels.Channels{ch: {Group: group,
				MaxDeliveries: tc.maxDeliveries, MaxRetries: channels.NoRetries,
				DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
				Handler: func(ctx context.Context, m *channels.Message) error {
					runs.Add(1)
					attempt.Store(int32(m.Attempt))
					return nil
				}}}})
			if tc.wantRun {
				eventually(t, 10*time.Second, "run", func() bool { return runs.Load() == 1 })
				if attempt.Load() != 1 {
					t.Fatalf("attempt %d, want 1", attempt.Load())
				}
				return
			}
			var dead []goredis.XMessage
			eventually(t, 10*time.Second, "dead letter", func() bool {
				dead, _ = raw.XRange(ctx, dlq, "-", "+").Result()
				return len(dead) == 1
			})
			hs, _ := dead[0].Values["headers"].(string)
			if runs.Load() != 0 || !strings.Contains(hs, "exceeded its deliveries") || !strings.Contains(hs, id) {
				t.Fatalf("runs %d, dead-letter headers %s", runs.Load(), hs)
			}
			eventually(t, 5*time.Second, "acked", func() bool {
				p, err := raw.XPending(ctx, ch, group).Result()
				return err == nil && p.Count == 0
			})
		})
	}
}

func TestLiveSlowHandlerIsNotRedelivered(t *testing.T) {
	needRedis(t)
	t.Run("default timings", func(t *testing.T) { testLiveSlowHandler(t, crashTimings) })
	// A claim period longer than MinIdleTime: the heartbeat keeps its own pace.
	slowClaims := crashTimings
	slowClaims.ClaimInterval = 3 * time.Second
	t.Run("claim interval above min idle time", func(t *testing.T) { testLiveSlowHandler(t, slowClaims) })
}

func testLiveSlowHandler(t *testing.T, timings redis.ChannelOptions) {
	ch, group := unique("slow.topic"), unique("slow-group")
	var calls, running, maxRunning atomic.Int32
	var finished atomic.Bool
	handler := func(ctx context.Context, m *channels.Message) error {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		if n > maxRunning.Load() {
			maxRunning.Store(n)
		}
		select { // a handler three times longer than MinIdleTime
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		finished.Store(true)
		return nil
	}
	for _, node := range []string{"slow-a", "slow-b"} {
		startPlugin(t, timings, &service{Name: "slow", Channels: channels.Channels{ch: {Group: group, Handler: handler}}},
			channels.WithNodeID(node))
	}
	sender := startPlugin(t, timings, nil)
	if err := sender.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "handler finished", finished.Load)
	consistently(t, 1500*time.Millisecond, "no redelivery", func() bool { return calls.Load() == 1 })
	if maxRunning.Load() != 1 {
		t.Fatalf("%d handlers ran at once", maxRunning.Load())
	}
}

// TestPrefetchedMessageIsNotStolen: an entry read ahead of a free slot
// (MaxInFlight 2, both slots busy with slow handlers) is kept alive by the
// heartbeat while it waits, so another member does not claim it.
func TestPrefetchedMessageIsNotStolen(t *testing.T) {
	needRedis(t)
	ch, group := unique("prefetch.topic"), unique("prefetch-group")
	var mu sync.Mutex
	seen := map[string]int{}
	handler := func(ctx context.Context, m *channels.Message) error {
		mu.Lock()
		seen[string(m.Payload)]++
		mu.Unlock()
		select { // 2.5 × MinIdleTime
		case <-time.After(2500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}
	startPlugin(t, crashTimings, &service{Name: "prefetch", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 2, Handler: handler}}},
		channels.WithNodeID("prefetch-a"))
	c := rawClient(t)
	ctx := context.Background()
	t.Cleanup(func() { c.Del(context.Background(), ch) })
	if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"m1"`}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "m1 running", func() bool { mu.Lock(); defer mu.Unlock(); return seen[`"m1"`] == 1 })
	// m2 and m3 arrive together: one takes the free slot, the other waits in the prefetch.
	pipe := c.TxPipeline()
	pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"m2"`}})
	pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"m3"`}})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "all three read by member a", func() bool {
		p, err := c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ch, Group: group, Start: "-", End: "+", Count: 10}).Result()
		return err == nil && len(p) == 3
	})
	startPlugin(t, crashTimings, &service{Name: "prefetch", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 2, Handler: handler}}},
		channels.WithNodeID("prefetch-b"))
	eventually(t, 15*time.Second, "all handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[`"m1"`]+seen[`"m2"`]+seen[`"m3"`] == 3
	})
	eventually(t, 15*time.Second, "all acknowledged", func() bool { return c.XPending(ctx, ch, group).Val().Count == 0 })
	mu.Lock()
	defer mu.Unlock()
	for _, k := range []string{`"m1"`, `"m2"`, `"m3"`} {
		if seen[k] != 1 {
			t.Fatalf("%s handled %d times (%v)", k, seen[k], seen)
		}
	}
}

// TestHeartbeatLeavesAClaimedMessageToItsNewOwner: after a missed heartbeat
// (a long pause) another member claimed a message this consumer still
// runs; the heartbeat must not take it back.
func TestHeartbeatLeavesAClaimedMessageToItsNewOwner(t *testing.T) {
	needRedis(t)
	ctx := context.Background()
	raw := rawClient(t)
	ch, group := unique("beat.topic"), unique("beat-group")
	release := make(chan struct{})
	var started atomic.Int32
	p := startPlugin(t, crashTimings, &service{Name: "beat", Channels: channels.Channels{ch: {Group: group,
		Handler: func(ctx context.Context, m *channels.Message) error {
			started.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}}}, channels.WithNodeID("slow-owner"))
	defer close(release)
	if err := p.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "handler started", func() bool { return started.Load() == 1 })
	pend, err := raw.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ch, Group: group, Start: "-", End: "+", Count: 1}).Result()
	if err != nil || len(pend) != 1 {
		t.Fatalf("pending %v %v", pend, err)
	}
	if err := raw.XClaim(ctx, &goredis.XClaimArgs{Stream: ch, Group: group, Consumer: "thief",
		Messages: []string{pend[0].ID}}).Err(); err != nil {
		t.Fatal(err)
	}
	owner := func() string {
		p, err := raw.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ch, Group: group, Start: "-", End: "+", Count: 1}).Result()
		if err != nil || len(p) == 0 {
			return ""
		}
		return p[0].Consumer
	}
	// Several heartbeats (MinIdleTime/3 = 333 ms) pass.
	consistently(t, 1200*time.Millisecond, "the new owner keeps the message", func() bool { return owner() == "thief" })
}

// TestTrimmedPendingEntryIsCleared: an entry deleted while pending (XDEL,
// or MAXLEN trimming) is cleared from the pending list, not claimed forever,
// and no handler runs for it.
func TestTrimmedPendingEntryIsCleared(t *testing.T) {
	needRedis(t)
	ctx := context.Background()
	raw := rawClient(t)
	ch, group := unique("trim.topic"), unique("trim-group")
	if err := raw.XGroupCreateMkStream(ctx, ch, group, "$").Err(); err != nil {
		t.Fatal(err)
	}
	id, err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", "1"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "gone", Streams: []string{ch, ">"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.XDel(ctx, ch, id).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.Do(ctx, "XCLAIM", ch, group, "gone", 0, id, "IDLE", 60000, "JUSTID").Err(); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	startPlugin(t, crashTimings, &service{Name: "trim", Channels: channels.Channels{ch: {Group: group,
		Handler: func(context.Context, *channels.Message) error { runs.Add(1); return nil }}}})
	eventually(t, 10*time.Second, "pending list cleared", func() bool {
		p, err := raw.XPending(ctx, ch, group).Result()
		return err == nil && p.Count == 0
	})
	if runs.Load() != 0 {
		t.Fatalf("handler ran %d times for a deleted entry", runs.Load())
	}
}
