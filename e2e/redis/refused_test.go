package redis

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/redis"
)

// A dead-letter target that Redis refuses (the key holds a string: XADD
// answers WRONGTYPE): the message is tried a bounded number of times, then
// dropped with ErrDeadLetterRefused and an error log; the channel goes on.
func TestRefusedDeadLetterIsBounded(t *testing.T) {
	needRedis(t)
	ctx := context.Background()
	ch, group, dlq := unique("refused"), unique("refused-g"), unique("refused.DLQ")
	o, err := goredis.ParseURL(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(o)
	defer c.Close()
	if err := c.Set(ctx, dlq, "not a stream", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	defer c.Del(context.Background(), dlq)

	var mu sync.Mutex
	var events []broker.Event
	runs := 0
	okRuns := 0
	sv := &service{Name: "refused", Channels: channels.Channels{ch: {Group: group, MaxRetries: channels.NoRetries, MaxDeliveries: 3,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, RefusalWindow: time.Second},
		Handler: func(_ context.Context, m *broker.Message) error {
			var n int
			_ = m.Decode(&n)
			mu.Lock()
			defer mu.Unlock()
			if n == 1 {
				runs++
				return errors.New("fails for good")
			}
			okRuns++
			return nil
		}}}}
	timings := redis.ChannelOptions{MinIdleTime: 300 * time.Millisecond, ClaimInterval: 50 * time.Millisecond, ReadTimeout: 200 * time.Millisecond}
	p := startPlugin(t, timings, sv, channels.WithObserver(func(_ context.Context, e broker.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}))
	if err := p.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatal(err)
	}
	dropped := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.Outcome.Action == broker.Drop && errors.Is(e.Outcome.Err, broker.ErrDeadLetterRefused) {
				return true
			}
		}
		return false
	}
	eventually(t, 30*time.Second, "dropped with ErrDeadLetterRefused", dropped)
	if err := p.SendToChannel(ctx, ch, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the channel goes on", func() bool { mu.Lock(); defer mu.Unlock(); return okRuns == 1 })
	mu.Lock()
	n, total := runs, len(events)
	mu.Unlock()
	consistently(t, time.Second, "no more deliveries of the dropped message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == total
	})
	if n != 1 {
		t.Fatalf("the handler ran %d times, want 1 (later deliveries are dead-lettered without running)", n)
	}
	pending, err := c.XPending(ctx, ch, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Fatalf("%d entries still pending after the drop", pending.Count)
	}
	t.Logf("deliveries until the drop: %d", total-1)
}
