package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/redis"
)

// toolTarget is a Redis deployment the tooling tests run on.
type toolTarget struct {
	name string
	need func(t *testing.T)
	// adapter builds an adapter on the target, not connected.
	adapter func(t *testing.T) *redis.Adapter
	// raw is a client of the target for the tests' own checks.
	raw func(t *testing.T) goredis.UniversalClient
}

var toolTargets = []toolTarget{
	{
		name: "single",
		need: needRedis,
		adapter: func(t *testing.T) *redis.Adapter {
			a, err := redis.New(redisURL(), redis.WithChannelOptions(crashTimings))
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		raw: func(t *testing.T) goredis.UniversalClient { return rawClient(t) },
	},
	{
		name: "cluster",
		need: func(t *testing.T) { brokerenv.Need(t, "redis-cluster", brokerenv.PingRedisCluster) },
		adapter: func(t *testing.T) *redis.Adapter {
			a, err := redis.NewFromOptions(&goredis.UniversalOptions{Addrs: brokerenv.RedisClusterAddrs(), IsClusterMode: true},
				redis.WithChannelOptions(crashTimings))
			if err != nil {
				t.Fatal(err)
			}
			return a
		},
		raw: func(t *testing.T) goredis.UniversalClient {
			c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: brokerenv.RedisClusterAddrs()})
			t.Cleanup(func() { c.Close() })
			return c
		},
	},
}

// forTargets runs body on the single node and on the Cluster.
func forTargets(t *testing.T, body func(t *testing.T, tt toolTarget)) {
	for _, tt := range toolTargets {
		t.Run(tt.name, func(t *testing.T) {
			tt.need(t)
			body(t, tt)
		})
	}
}

// toolAdapter is a connected adapter used the way the tooling uses it
// (no plugin), closed at the end of the test.
func toolAdapter(t *testing.T, tt toolTarget) *redis.Adapter {
	t.Helper()
	a := tt.adapter(t)
	if err := a.Connect(context.Background(), broker.Env{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

func browseAll(t *testing.T, a *redis.Adapter, queue string) []*broker.StoredMessage {
	t.Helper()
	var out []*broker.StoredMessage
	if err := a.BrowseDeadLetters(context.Background(), queue, func(m *broker.StoredMessage) bool {
		out = append(out, m)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestToolingDeadLetters: the dead letters the plugin wrote are browsed
// with their headers, without consuming them; removal deletes exactly the
// IDs given.
func TestToolingDeadLetters(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		ch, group, dlq := unique("tool.dl.topic"), unique("tool-dl-group"), unique("tool.dl.DLQ")
		tool := toolAdapter(t, tt)
		raw := tt.raw(t)
		t.Cleanup(func() {
			_ = tool.RemoveChannel(context.Background(), ch)
			_ = tool.RemoveChannel(context.Background(), dlq)
		})
		startPluginOn(t, tt, &service{Name: "tooldl", Channels: channels.Channels{ch: {Group: group, MaxRetries: channels.NoRetries,
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
			Handler:       func(context.Context, *channels.Message) error { return errors.New("boom") }}}})
		snd := startPluginOn(t, tt, nil)
		for i := range 3 {
			if err := snd.SendToChannel(ctx, ch, map[string]int{"n": i}, broker.WithHeader("user-header", fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 15*time.Second, "3 dead letters", func() bool { return raw.XLen(ctx, dlq).Val() == 3 })

		got := browseAll(t, tool, dlq)
		if len(got) != 3 {
			t.Fatalf("browsed %d dead letters, want 3", len(got))
		}
		seen := map[string]bool{}
		for i, m := range got {
			if m.Channel != dlq || m.ID == "" || time.Since(m.Time) > time.Minute || m.Time.After(time.Now().Add(time.Second)) {
				t.Fatalf("dead letter %d: id %q channel %q time %v", i, m.ID, m.Channel, m.Time)
			}
			if m.Headers[broker.HeaderErrorMessage] != "boom" || m.Headers[broker.HeaderOriginalChannel] != ch ||
				m.Headers[broker.HeaderOriginalGroup] != group || m.Headers[broker.HeaderOriginalID] == "" {
				t.Fatalf("dead letter %d headers %v", i, m.Headers)
			}
			seen[string(m.Payload)+"|"+m.Headers["user-header"]] = true
			if i > 0 && !idLess(got[i-1].ID, m.ID) {
				t.Fatalf("not oldest first: %s then %s", got[i-1].ID, m.ID)
			}
		}
		for i := range 3 {
			if !seen[fmt.Sprintf(`{"n":%d}|%d`, i, i)] {
				t.Fatalf("dead letter %d missing from %v", i, seen)
			}
		}
		// fn returning false stops the browse.
		n := 0
		if err := tool.BrowseDeadLetters(ctx, dlq, func(*broker.StoredMessage) bool { n++; return false }); err != nil || n != 1 {
			t.Fatalf("browse stopped after %d calls: %v", n, err)
		}
		if l := raw.XLen(ctx, dlq).Val(); l != 3 {
			t.Fatalf("XLEN after browsing = %d, want 3", l)
		}
		// A queue that does not exist holds nothing.
		if none := browseAll(t, tool, unique("tool.dl.none")); len(none) != 0 {
			t.Fatalf("browse of a missing queue: %d", len(none))
		}

		// A group reading the dead-letter queue from its start gets them all.
		dead := &channelstest.Recorder{}
		startPluginOn(t, tt, &service{Name: "tooldlread", Channels: channels.Channels{dlq: {Group: unique("tool-dl-reader"),
			AdapterOptions: []any{redis.ChannelOptions{StartID: "0"}}, Handler: dead.Handle}}})
		eventually(t, 15*time.Second, "the reading group gets the 3 dead letters", func() bool { return dead.Count() == 3 })

		// Removal deletes exactly the IDs given; unknown ones are not errors.
		removed, err := tool.RemoveDeadLetters(ctx, dlq, got[0].ID, got[2].ID, "1-1", "not-an-id")
		if err != nil || removed != 2 {
			t.Fatalf("removed %d: %v", removed, err)
		}
		left := browseAll(t, tool, dlq)
		if len(left) != 1 || left[0].ID != got[1].ID {
			t.Fatalf("left after removal: %v", left)
		}
		if removed, err := tool.RemoveDeadLetters(ctx, dlq, got[0].ID); err != nil || removed != 0 {
			t.Fatalf("removing again: %d, %v", removed, err)
		}
	})
}

// idLess orders stream entry IDs.
func idLess(a, b string) bool {
	var am, as, bm, bs uint64
	fmt.Sscanf(a, "%d-%d", &am, &as)
	fmt.Sscanf(b, "%d-%d", &bm, &bs)
	return am < bm || am == bm && as < bs
}

// startPluginOn starts a plugin on the target with the crash timings.
func startPluginOn(t *testing.T, tt toolTarget, schema any) *channels.Plugin {
	t.Helper()
	return channelstest.StartPlugin(t, tt.adapter(t), schema)
}

// TestToolingHostileDeadLetters: entries the consumer could not decode
// (no payload, headers that are malformed or over MaxHeadersSize) are
// listed with what decodes, and the browse goes on past them.
func TestToolingHostileDeadLetters(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		dlq := unique("tool.hostile.DLQ")
		tool := toolAdapter(t, tt)
		raw := tt.raw(t)
		t.Cleanup(func() { raw.Del(context.Background(), dlq) })
		huge := `{"a":"` + strings.Repeat("x", broker.MaxHeadersSize+1) + `"}`
		many := make(map[string]any, broker.MaxHeaders+1)
		for i := range broker.MaxHeaders + 1 {
			many[fmt.Sprint("h", i)] = "v"
		}
		entries := []map[string]any{
			{"payload": "p1", "headers": "{not json"},
			{"payload": "p2", "headers": huge},
			{"headers": `{"k":"v"}`}, // no payload
			{"payload": "p4", "headers": mustJSON(t, many)},
			{"payload": "p5", "headers": `{"k":"v"}`},
		}
		for _, v := range entries {
			if err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: dlq, Values: v}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		got := browseAll(t, tool, dlq)
		if len(got) != 5 {
			t.Fatalf("listed %d entries, want 5", len(got))
		}
		for i, want := range []string{"p1", "p2", "", "p4", "p5"} {
			if string(got[i].Payload) != want {
				t.Fatalf("entry %d payload %q, want %q", i, got[i].Payload, want)
			}
		}
		for _, i := range []int{0, 1, 3} {
			if got[i].Headers != nil {
				t.Fatalf("entry %d: headers that do not decode gave %d headers", i, len(got[i].Headers))
			}
		}
		if got[2].Headers["k"] != "v" || got[4].Headers["k"] != "v" {
			t.Fatalf("headers %v / %v", got[2].Headers, got[4].Headers)
		}
		// A key of another type is an error, not a crash.
		notStream := unique("tool.hostile.string")
		raw.Set(ctx, notStream, "x", 0)
		t.Cleanup(func() { raw.Del(context.Background(), notStream) })
		if err := tool.BrowseDeadLetters(ctx, notStream, func(*broker.StoredMessage) bool { return true }); err == nil {
			t.Fatal("browsing a string key succeeded")
		}
	})
}

func mustJSON(t *testing.T, v map[string]any) string {
	t.Helper()
	b, err := (broker.JSON{}).Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestToolingRemoveMessage: RemoveMessage deletes one entry of a channel,
// and a missing one is ErrNotFound.
func TestToolingRemoveMessage(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		ch := unique("tool.rm.topic")
		tool := toolAdapter(t, tt)
		raw := tt.raw(t)
		t.Cleanup(func() { _ = tool.RemoveChannel(context.Background(), ch) })
		snd := startPluginOn(t, tt, nil)
		for i := range 2 {
			if err := snd.SendToChannel(ctx, ch, i); err != nil {
				t.Fatal(err)
			}
		}
		es := raw.XRange(ctx, ch, "-", "+").Val()
		if len(es) != 2 {
			t.Fatalf("%d entries", len(es))
		}
		if err := tool.RemoveMessage(ctx, ch, es[0].ID); err != nil {
			t.Fatal(err)
		}
		left := raw.XRange(ctx, ch, "-", "+").Val()
		if len(left) != 1 || left[0].ID != es[1].ID {
			t.Fatalf("left %v", left)
		}
		for _, c := range []struct{ ch, id string }{{ch, es[0].ID}, {ch, "1-1"}, {ch, "garbage"}, {unique("tool.rm.none"), es[1].ID}} {
			if err := tool.RemoveMessage(ctx, c.ch, c.id); !errors.Is(err, broker.ErrNotFound) {
				t.Fatalf("RemoveMessage(%s, %s) = %v, want ErrNotFound", c.ch, c.id, err)
			}
		}
	})
}

// TestToolingTail: Tail sees what is sent after it started, not before,
// and the group still gets everything.
func TestToolingTail(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		ch, group := unique("tool.tail.topic"), unique("tool-tail-group")
		tool := toolAdapter(t, tt)
		t.Cleanup(func() { _ = tool.RemoveChannel(context.Background(), ch) })
		rec := &channelstest.Recorder{}
		startPluginOn(t, tt, &service{Name: "tooltail", Channels: channels.Channels{ch: {Group: group, Handler: rec.Handle}}})
		snd := startPluginOn(t, tt, nil)
		if err := snd.SendToChannel(ctx, ch, "before"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "group got the first message", func() bool { return rec.Count() == 1 })

		var (
			mu     sync.Mutex
			tailed []string
		)
		tailCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- tool.Tail(tailCtx, ch, func(m *broker.StoredMessage) bool {
				if m.Channel != ch || m.ID == "" || m.Time.IsZero() {
					t.Errorf("tailed message %+v", m)
				}
				mu.Lock()
				tailed = append(tailed, string(m.Payload))
				mu.Unlock()
				return true
			})
		}()
		tailedCopy := func() []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(tailed)
		}
		// Send until the tail sees something: from then on it sees all.
		sent := 0
		eventually(t, 15*time.Second, "tail sees a message", func() bool {
			if err := snd.SendToChannel(ctx, ch, fmt.Sprint("m", sent)); err != nil {
				t.Fatal(err)
			}
			sent++
			return len(tailedCopy()) > 0
		})
		if err := snd.SendToChannel(ctx, ch, "final"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "tail sees the last message", func() bool {
			got := tailedCopy()
			return len(got) > 0 && got[len(got)-1] == `"final"`
		})
		got := tailedCopy()
		var first int
		if _, err := fmt.Sscanf(got[0], `"m%d"`, &first); err != nil {
			t.Fatalf("first tailed %q", got[0])
		}
		var want []string
		for i := first; i < sent; i++ {
			want = append(want, fmt.Sprintf(`"m%d"`, i))
		}
		want = append(want, `"final"`)
		if !slices.Equal(got, want) {
			t.Fatalf("tailed %v, want %v", got, want)
		}
		eventually(t, 15*time.Second, "the group gets every message", func() bool { return rec.Count() == 1+sent+1 })
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Tail returned %v after its context ended", err)
			}
		case <-time.After(redis.TailBlock + 5*time.Second):
			t.Fatal("Tail did not return after its context ended")
		}

		// fn returning false ends the tail.
		done2 := make(chan error, 1)
		go func() {
			done2 <- tool.Tail(ctx, ch, func(*broker.StoredMessage) bool { return false })
		}()
		n := 0
		eventually(t, 15*time.Second, "second tail returns", func() bool {
			select {
			case err := <-done2:
				if err != nil {
					t.Fatal(err)
				}
				return true
			default:
			}
			_ = snd.SendToChannel(ctx, ch, fmt.Sprint("x", n))
			n++
			return false
		})
	})
}

// TestToolingChannels: Channels lists the streams under a prefix, sorted,
// with their groups' pending counts; other key types and other prefixes
// are left out.
func TestToolingChannels(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		base := unique("tool.ls")
		chA, chB, group := base+".a", base+".b", unique("tool-ls-group")
		tool := toolAdapter(t, tt)
		raw := tt.raw(t)
		t.Cleanup(func() {
			_ = tool.RemoveChannel(context.Background(), chA)
			_ = tool.RemoveChannel(context.Background(), chB)
			raw.Del(context.Background(), base+".hash")
		})
		release := make(chan struct{})
		startPluginOn(t, tt, &service{Name: "toolls", Channels: channels.Channels{chA: {Group: group, MaxInFlight: 1,
			Handler: func(ctx context.Context, _ *channels.Message) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}}}})
		t.Cleanup(func() { close(release) }) // before the plugin stops
		snd := startPluginOn(t, tt, nil)
		if err := snd.SendToChannel(ctx, chA, 1); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := snd.SendToChannel(ctx, chB, 1); err != nil {
				t.Fatal(err)
			}
		}
		raw.HSet(ctx, base+".hash", "k", "v")

		var list []broker.ChannelInfo
		eventually(t, 10*time.Second, "the group holds its message", func() bool {
			var err error
			list, err = tool.Channels(ctx, base+".")
			if err != nil {
				t.Fatal(err)
			}
			return len(list) == 2 && len(list[0].Groups) == 1 && list[0].Groups[0].Pending == 1
		})
		a, b := list[0], list[1]
		wantLag := int64(-1) // Redis < 7 does not tell it
		if v := raw.Info(ctx, "server").Val(); strings.Contains(v, "redis_version:7") || strings.Contains(v, "redis_version:8") {
			wantLag = 0
		}
		if a.Name != chA || a.Messages != 1 || a.Groups[0].Name != group || a.Groups[0].Lag != wantLag {
			t.Fatalf("channel a: %+v", a)
		}
		if b.Name != chB || b.Messages != 2 || len(b.Groups) != 0 {
			t.Fatalf("channel b: %+v", b)
		}
		// The prefix is literal: glob characters match themselves only.
		if l, err := tool.Channels(ctx, base+"*"); err != nil || len(l) != 0 {
			t.Fatalf("Channels(%q) = %v, %v", base+"*", l, err)
		}
		all, err := tool.Channels(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.IsSortedFunc(all, func(x, y broker.ChannelInfo) int { return strings.Compare(x.Name, y.Name) }) {
			t.Fatal("Channels is not sorted")
		}
		if !slices.ContainsFunc(all, func(c broker.ChannelInfo) bool { return c.Name == chA }) ||
			!slices.ContainsFunc(all, func(c broker.ChannelInfo) bool { return c.Name == chB }) {
			t.Fatal("Channels(\"\") misses the test channels")
		}
	})
}

// TestToolingBrowsePages: a browse reads every page in order and stops at
// the newest entry present when it started, even when more come meanwhile.
func TestToolingBrowsePages(t *testing.T) {
	forTargets(t, func(t *testing.T, tt toolTarget) {
		ctx := context.Background()
		dlq := unique("tool.pages.DLQ")
		tool := toolAdapter(t, tt)
		raw := tt.raw(t)
		t.Cleanup(func() { raw.Del(context.Background(), dlq) })
		total := 2*redis.BrowsePage + 7
		pipe := raw.Pipeline()
		for i := range total {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: dlq, Values: []any{"payload", fmt.Sprint(i)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		var got []string
		err := tool.BrowseDeadLetters(ctx, dlq, func(m *broker.StoredMessage) bool {
			if len(got) == 0 {
				raw.XAdd(ctx, &goredis.XAddArgs{Stream: dlq, Values: []any{"payload", "late"}})
			}
			got = append(got, string(m.Payload))
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != total {
			t.Fatalf("browsed %d entries, want %d", len(got), total)
		}
		for i, p := range got {
			if p != fmt.Sprint(i) {
				t.Fatalf("entry %d is %q", i, p)
			}
		}
	})
}
