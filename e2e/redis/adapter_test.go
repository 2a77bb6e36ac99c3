package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/redis"
)

func rawClient(t *testing.T) *goredis.Client {
	t.Helper()
	o, err := goredis.ParseURL(redisURL())
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCappedStream(t *testing.T) {
	needRedis(t)
	ch := unique("capped.topic")
	p := startPlugin(t, crashTimings, nil)
	for i := range 10 {
		if err := p.SendToChannel(context.Background(), ch, i, redis.WithMaxLen(5, false)); err != nil {
			t.Fatal(err)
		}
	}
	c := rawClient(t)
	t.Cleanup(func() { c.Del(context.Background(), ch) })
	if n := c.XLen(context.Background(), ch).Val(); n != 5 {
		t.Fatalf("XLEN = %d, want 5", n)
	}

	// The adapter-wide default applies to sends that set no cap of their own.
	a, err := redis.New(redisURL(), redis.WithDefaultMaxLen(3, false))
	if err != nil {
		t.Fatal(err)
	}
	capped, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := capped.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer capped.Stop(context.Background())
	ch2 := unique("capped.default")
	t.Cleanup(func() { c.Del(context.Background(), ch2) })
	for i := range 10 {
		if err := capped.SendToChannel(context.Background(), ch2, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.XLen(context.Background(), ch2).Val(); n != 3 {
		t.Fatalf("XLEN with the default cap = %d, want 3", n)
	}
	if err := capped.SendToChannel(context.Background(), ch2, 10, redis.WithMaxLen(8, false)); err != nil {
		t.Fatal(err)
	}
	if n := c.XLen(context.Background(), ch2).Val(); n != 4 {
		t.Fatalf("XLEN after a send with its own cap = %d, want 4", n)
	}
}

func TestWireFormat(t *testing.T) {
	needRedis(t)
	ch := unique("wire.topic")
	p := startPlugin(t, crashTimings, nil, channels.WithNamespace("ns"))
	if err := p.SendToChannel(context.Background(), ch, map[string]int{"id": 1}, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
	c := rawClient(t)
	stream := "ns." + ch
	t.Cleanup(func() { c.Del(context.Background(), stream) })
	entries := c.XRange(context.Background(), stream, "-", "+").Val()
	if len(entries) != 1 {
		t.Fatalf("%d entries in %s", len(entries), stream)
	}
	v := entries[0].Values
	if v["payload"] != `{"id":1}` || v["headers"] != `{"k":"v"}` || len(v) != 2 {
		t.Fatalf("entry fields %v", v)
	}
}

// TestACLUserAndRedaction connects as an ACL user, and checks that a wrong
// password fails Start with an error that does not contain the password.
func TestACLUserAndRedaction(t *testing.T) {
	needRedis(t)
	c := rawClient(t)
	ctx := context.Background()
	user := fmt.Sprintf("chtest%d", time.Now().UnixNano())
	if err := c.Do(ctx, "ACL", "SETUSER", user, "on", ">right-password", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Do(context.Background(), "ACL", "DELUSER", user) })
	u, _ := url.Parse(redisURL())

	good := *u
	good.User = url.UserPassword(user, "right-password")
	a, err := redis.New(good.String(), redis.WithChannelOptions(crashTimings))
	if err != nil {
		t.Fatal(err)
	}
	ch := unique("acl.topic")
	var got atomic.Int32
	p, _ := channels.New(channels.WithAdapter(a))
	_ = p.Register(&service{Name: "acl", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *channels.Message) error {
		got.Add(1)
		return nil
	})}})
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	if err := p.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "delivery as the ACL user", func() bool { return got.Load() == 1 })

	bad := *u
	bad.User = url.UserPassword(user, "wrong-password-xyz")
	a2, err := redis.New(bad.String())
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := channels.New(channels.WithAdapter(a2))
	err = p2.Start(ctx)
	if err == nil {
		t.Fatal("Start with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-password-xyz") || strings.Contains(a2.String(), "wrong-password-xyz") {
		t.Fatalf("the password leaks: %v / %s", err, a2.String())
	}
	if err := p2.SendToChannel(ctx, ch, 1); err == nil {
		t.Fatal("send on a plugin that failed to start succeeded")
	}
}

// TestStaleConsumersAreRemoved: a consumer name left by a process that is
// gone (holding nothing) is deleted by a live member after StaleConsumerAge.
func TestStaleConsumersAreRemoved(t *testing.T) {
	needRedis(t)
	ch, group := unique("stale.topic"), unique("stale-group")
	c := rawClient(t)
	ctx := context.Background()
	t.Cleanup(func() { c.Del(context.Background(), ch) })
	if err := c.XGroupCreateMkStream(ctx, ch, group, "$").Err(); err != nil {
		t.Fatal(err)
	}
	// A consumer that read nothing and went away.
	if err := c.XGroupCreateConsumer(ctx, ch, group, "ghost").Err(); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		for _, ci := range c.XInfoConsumers(ctx, ch, group).Val() {
			out = append(out, ci.Name)
		}
		return out
	}
	if got := names(); len(got) != 1 || got[0] != "ghost" {
		t.Fatalf("consumers %v", got)
	}
	timings := crashTimings
	timings.StaleConsumerAge = time.Second
	startPlugin(t, timings, &service{Name: "stale", Channels: channels.Channels{ch: {Group: group,
		Handler: func(context.Context, *channels.Message) error { return nil }}}}, channels.WithNodeID("alive"))
	eventually(t, 10*time.Second, "ghost consumer removed", func() bool {
		for _, n := range names() {
			if n == "ghost" {
				return false
			}
		}
		return true
	})
}

// TestDeadLetterPublishFailureKeepsTheMessage: when the dead-letter XADD
// fails, the original is not acknowledged; once the dead-letter stream works
// again the message is dead-lettered without running the handler again.
// TestDeadLetterPublishFailureKeepsTheMessage: a failed dead-letter write
// keeps the message pending; it is dead-lettered later from its recorded
// failure, without running the handler again — also for a Permanent
// failure with retries left, which a delivery count alone would rerun.
func TestDeadLetterPublishFailureKeepsTheMessage(t *testing.T) {
	t.Run("last attempt", func(t *testing.T) {
		testDeadLetterPublishFailure(t, channels.NoRetries, errors.New("Something happened"))
	})
	t.Run("Permanent with retries left", func(t *testing.T) {
		testDeadLetterPublishFailure(t, 3, channels.Permanent(errors.New("Something happened")))
	})
}

func testDeadLetterPublishFailure(t *testing.T, retries int, failure error) {
	needRedis(t)
	c := rawClient(t)
	ctx := context.Background()
	ch, group, dlq := unique("dlfail.topic"), unique("dlfail-group"), unique("dlfail.DLQ")
	t.Cleanup(func() { c.Del(context.Background(), ch, dlq) })
	// A plain string under the dead-letter name: XADD to it fails with WRONGTYPE.
	if err := c.Set(ctx, dlq, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	p := startPlugin(t, crashTimings, &service{Name: "dlfail", Channels: channels.Channels{ch: {Group: group,
		MaxRetries: retries, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(context.Context, *channels.Message) error { calls.Add(1); return failure }}}})
	if err := p.SendToChannel(ctx, ch, map[string]int{"id": 1}); err != nil {
		t.Fatal(err)
	}
	pending := func() int64 { return c.XPending(ctx, ch, group).Val().Count }
	eventually(t, 10*time.Second, "handler ran", func() bool { return calls.Load() == 1 })
	consistently(t, 1500*time.Millisecond, "message kept pending while the dead-letter queue is broken", func() bool { return pending() == 1 })

	if err := c.Del(ctx, dlq).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "dead-lettered once the queue works", func() bool { return c.XLen(ctx, dlq).Val() == 1 })
	eventually(t, 10*time.Second, "original acknowledged", func() bool { return pending() == 0 })
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times", calls.Load())
	}
	e := c.XRange(ctx, dlq, "-", "+").Val()[0]
	hdr := e.Values["headers"].(string)
	if e.Values["payload"] != `{"id":1}` || !strings.Contains(hdr, `"x-original-group":"`+group+`"`) ||
		!strings.Contains(hdr, `"x-error-message":"Something happened"`) {
		t.Fatalf("dead letter %v", e.Values)
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(hdr), &h); err != nil || h["x-original-id"] == "" {
		t.Fatalf("headers %s: %v", hdr, err)
	}
	eventually(t, 5*time.Second, "failure record deleted with the ack", func() bool {
		return c.Exists(ctx, "chan:"+ch+":"+group+":msg:"+h["x-original-id"]).Val() == 0
	})
}
