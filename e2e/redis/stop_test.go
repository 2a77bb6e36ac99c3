package redis

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/redis"
)

// TestStopBreaksTheBlockingRead: an idle consumer blocked in XREADGROUP
// (ReadTimeout 10s) stops at once.
func TestStopBreaksTheBlockingRead(t *testing.T) {
	needRedis(t)
	timings := crashTimings
	timings.ReadTimeout = 10 * time.Second
	name := fmt.Sprintf("stoptest%d", time.Now().UnixNano())
	a, err := redis.New(redisURL()+"?client_name="+name, redis.WithChannelOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "idle", Channels: channels.Channels{unique("idle.topic"): channels.On(
		func(context.Context, *channels.Message) error { return nil })}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until its reader is blocked in XREADGROUP.
	c := rawClient(t)
	eventually(t, 10*time.Second, "reader blocked", func() bool {
		for _, line := range strings.Split(c.ClientList(ctx).Val(), "\n") {
			if strings.Contains(line, "name="+name+" ") && strings.Contains(line, "cmd=xreadgroup") && strings.Contains(line, "flags=b") {
				return true
			}
		}
		return false
	})
	start := time.Now()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Stop took %s with a 10s blocking read", took)
	}
}

// TestStopBreaksTheBlockingReadWithoutClientPermission: a user that may not
// run CLIENT (so no CLIENT UNBLOCK) still stops at once: the reader's
// connection is closed instead.
func TestStopBreaksTheBlockingReadWithoutClientPermission(t *testing.T) {
	needRedis(t)
	c := rawClient(t)
	ctx := context.Background()
	user := fmt.Sprintf("chnoclient%d", time.Now().UnixNano())
	if err := c.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-client").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(context.Background(), "ACL", "DELUSER", user) })
	u, _ := url.Parse(redisURL())
	u.User = url.UserPassword(user, "pw")
	timings := crashTimings
	timings.ReadTimeout = 10 * time.Second
	p := startPluginAt(t, u.String(), timings, &service{Name: "idle", Channels: channels.Channels{unique("idle.topic"): channels.On(
		func(context.Context, *channels.Message) error { return nil })}})
	eventually(t, 10*time.Second, "reader blocked", func() bool {
		for _, line := range strings.Split(c.ClientList(ctx).Val(), "\n") {
			if strings.Contains(line, "user="+user+" ") && strings.Contains(line, "cmd=xreadgroup") && strings.Contains(line, "flags=b") {
				return true
			}
		}
		return false
	})
	start := time.Now()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Stop took %s with a 10s blocking read", took)
	}
}

// TestStopGivesBackReadAheadAsFirstAttempt: an entry read ahead of a free
// slot when the consumer stops is handed back unrun, claimable at once, with
// the delivery counter of that read undone: the next member sees attempt 1.
func TestStopGivesBackReadAheadAsFirstAttempt(t *testing.T) {
	needRedis(t)
	ch, group := unique("readahead.topic"), unique("readahead-group")
	timings := crashTimings
	timings.MinIdleTime = 30 * time.Second // a redelivery by idle time would fail the test
	release := make(chan struct{})
	var mu sync.Mutex
	seenA := map[string]int{}
	a := startPlugin(t, timings, &service{Name: "readahead", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 2,
		Handler: func(ctx context.Context, m *channels.Message) error {
			mu.Lock()
			seenA[string(m.Payload)]++
			mu.Unlock()
			<-release
			return nil
		}}}}, channels.WithNodeID("readahead-a"))
	c := rawClient(t)
	ctx := context.Background()
	t.Cleanup(func() { c.Del(context.Background(), ch) })
	if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"m1"`}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "m1 running", func() bool { mu.Lock(); defer mu.Unlock(); return seenA[`"m1"`] == 1 })
	pipe := c.TxPipeline()
	pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"m2"`}})
	pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"m3"`}})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "m2 running, m3 read ahead", func() bool {
		mu.Lock()
		defer mu.Unlock()
		p, err := c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ch, Group: group, Start: "-", End: "+", Count: 10}).Result()
		return err == nil && len(p) == 3 && seenA[`"m2"`] == 1
	})
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(ctx) }()
	var got atomic.Value
	startPlugin(t, timings, &service{Name: "readahead", Channels: channels.Channels{ch: {Group: group,
		Handler: func(ctx context.Context, m *channels.Message) error {
			got.Store(m)
			return nil
		}}}}, channels.WithNodeID("readahead-b"))
	eventually(t, 10*time.Second, "m3 handed to the other member", func() bool { return got.Load() != nil })
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	m := got.Load().(*channels.Message)
	mu.Lock()
	defer mu.Unlock()
	if string(m.Payload) != `"m3"` || m.Attempt != 1 || seenA[`"m3"`] != 0 {
		t.Fatalf("member b got %s attempt %d; member a ran m3 %d times", m.Payload, m.Attempt, seenA[`"m3"`])
	}
	eventually(t, 10*time.Second, "all acknowledged", func() bool { return c.XPending(ctx, ch, group).Val().Count == 0 })
}

// TestStopKeepsHeartbeatingSlowHandlers: while a stop waits for a handler
// that runs longer than MinIdleTime, the member keeps refreshing the
// message's idle time, so another member of the group does not claim it
// and run it a second time.
func TestStopKeepsHeartbeatingSlowHandlers(t *testing.T) {
	needRedis(t)
	ch, group := unique("slowstop.topic"), unique("slowstop-group")
	timings := crashTimings // MinIdleTime 1 s, claims every 50 ms
	release := make(chan struct{})
	var ranA, ranB atomic.Int32
	a := startPlugin(t, timings, &service{Name: "slowstop", Channels: channels.Channels{ch: {Group: group,
		Handler: func(ctx context.Context, m *channels.Message) error {
			ranA.Add(1)
			<-release
			return nil
		}}}}, channels.WithNodeID("slowstop-a"))
	c := rawClient(t)
	ctx := context.Background()
	t.Cleanup(func() { c.Del(context.Background(), ch) })
	if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: ch, Values: []any{"payload", `"slow"`}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the message running on member a", func() bool { return ranA.Load() == 1 })
	startPlugin(t, timings, &service{Name: "slowstop", Channels: channels.Channels{ch: {Group: group,
		Handler: func(ctx context.Context, m *channels.Message) error {
			ranB.Add(1)
			return nil
		}}}}, channels.WithNodeID("slowstop-b"))
	stopped := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		stopped <- a.Stop(sctx)
	}()
	consistently(t, 3*timings.MinIdleTime, "member b not running a's message while a stops", func() bool {
		return ranB.Load() == 0 && ranA.Load() == 1
	})
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "all acknowledged", func() bool { return c.XPending(ctx, ch, group).Val().Count == 0 })
	if ranA.Load() != 1 || ranB.Load() != 0 {
		t.Fatalf("member a ran it %d times, member b %d", ranA.Load(), ranB.Load())
	}
}
