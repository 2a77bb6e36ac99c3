package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/cmd/channels/command"
	"github.com/microchannels/channels/dlq"
	"github.com/microchannels/channels/e2e/brokerenv"

	// The adapters the targets resolve by URL.
	_ "github.com/microchannels/channels/amqp"
	_ "github.com/microchannels/channels/jetstream"
	_ "github.com/microchannels/channels/kafka"
	_ "github.com/microchannels/channels/redis"
)

// target is one broker the tests run the command against.
type target struct {
	name string
	// url is the adapter URL, as the command and the plugin take it.
	url func() string
	// need skips the target without its broker (fails it when required).
	need func(t testing.TB)
	// removes: the adapter deletes one stored message (rm-message).
	removes bool
}

var targets = []target{
	{name: "redis", url: brokerenv.RedisURL, removes: true,
		need: func(t testing.TB) { brokerenv.Need(t, "redis", brokerenv.PingRedis) }},
	{name: "redis-cluster", url: redisClusterURL, removes: true,
		need: func(t testing.TB) { brokerenv.Need(t, "redis-cluster", brokerenv.PingRedisCluster) }},
	{name: "amqp", url: brokerenv.AMQPURL, // through the management plugin (make services enables it)
		need: func(t testing.TB) { brokerenv.Need(t, "amqp", brokerenv.PingAMQP) }},
	{name: "nats", url: brokerenv.NATSURL, removes: true,
		need: func(t testing.TB) {
			brokerenv.Need(t, "nats", func() error { return brokerenv.DialURL(brokerenv.NATSURL()) })
		}},
	{name: "kafka", url: kafkaURL,
		need: func(t testing.TB) {
			brokerenv.Need(t, "kafka", func() error { return brokerenv.Dial(brokerenv.KafkaBrokers()[0]) })
		}},
}

// redisClusterURL is the cluster in go-redis's cluster URL syntax.
func redisClusterURL() string {
	addrs := brokerenv.RedisClusterAddrs()
	u := "redis://" + addrs[0]
	for i, a := range addrs[1:] {
		if i == 0 {
			u += "?addr=" + a
		} else {
			u += "&addr=" + a
		}
	}
	return u
}

func kafkaURL() string { return "kafka://" + strings.Join(brokerenv.KafkaBrokers(), ",") }

// eachTarget runs fn as a subtest per target whose broker answers.
func eachTarget(t *testing.T, fn func(t *testing.T, tg target)) { eachTargetBut(t, "", fn) }

// eachTargetBut is eachTarget without the target named except.
func eachTargetBut(t *testing.T, except string, fn func(t *testing.T, tg target)) {
	for _, tg := range targets {
		if tg.name == except {
			continue
		}
		t.Run(tg.name, func(t *testing.T) {
			tg.need(t)
			fn(t, tg)
		})
	}
}

// user is the payload of the test messages.
type user struct {
	ID int `json:"id"`
}

// fixture is one test's plugin on a target, in a namespace of its own:
// service "billing" (group billing) consumes
//
//   - orders and refunds: every message fails with "bad user <id>" until
//     fixed, with no retries, and is dead-lettered to FAILED_MESSAGES;
//     once fixed, handled records it;
//   - orders-retry: retried records every message;
//   - parked-src: dead-letters to PARKED (which it declares); nothing is
//     sent to it.
//
// Names given to the command are short; the plugin and the assertions
// use full ones (ns.orders, ns.FAILED_MESSAGES).
type fixture struct {
	t       *testing.T
	tg      target
	ns      string
	queue   string // ns.FAILED_MESSAGES
	parked  string // ns.PARKED
	p       *channels.Plugin
	ops     broker.Adapter
	fixed   atomic.Bool
	handled *channelstest.Recorder
	retried *channelstest.Recorder
	sent    atomic.Int64
}

func newFixture(t *testing.T, tg target) *fixture {
	t.Helper()
	ns := strings.ReplaceAll(channelstest.Unique("ops"), ".", "-")
	f := &fixture{t: t, tg: tg, ns: ns, queue: ns + "." + dlq.DefaultQueue, parked: ns + ".PARKED",
		handled: &channelstest.Recorder{}, retried: &channelstest.Recorder{}}
	failing := func(ctx context.Context, u user, m *channels.Message) error {
		if !f.fixed.Load() {
			return fmt.Errorf("bad user %d", u.ID)
		}
		return f.handled.Handle(ctx, m)
	}
	dead := func(queue string) *channels.DeadLettering {
		return &channels.DeadLettering{Enabled: true, QueueName: queue}
	}
	schema := &channelstest.Service{Name: "billing", Channels: channels.Channels{
		"orders":       {Group: "billing", MaxRetries: channels.NoRetries, DeadLettering: dead(""), Handler: channels.Typed(failing)},
		"refunds":      {Group: "billing", MaxRetries: channels.NoRetries, DeadLettering: dead(""), Handler: channels.Typed(failing)},
		"orders-retry": {Group: "billing", Handler: f.retried.Handle},
		"parked-src": {Group: "billing", MaxRetries: channels.NoRetries, DeadLettering: dead("PARKED"),
			Handler: func(context.Context, *channels.Message) error { return errors.New("parked") }},
	}}
	f.p = channelstest.StartPlugin(t, tg.url(), schema, channels.WithNamespace(ns))
	// Removed through the plugin's adapter, which knows its groups, before
	// the plugin stops (cleanups run last first).
	removeChannels(t, f.p.Adapter(), ns+".orders", ns+".refunds", ns+".orders-retry", ns+".parked-src", f.queue, f.parked)
	f.ops = opsAdapter(t, tg.url())
	return f
}

// removeChannels removes channels (and Kafka's removal-marker topics of
// them) at the end of the test, through a, all at once.
func removeChannels(t testing.TB, a broker.Adapter, names ...string) {
	t.Cleanup(func() {
		rm, ok := a.(broker.ChannelRemover)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if a.Name() == "Kafka" {
			for _, n := range names {
				names = append(names, n+".removed")
			}
		}
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := rm.RemoveChannel(ctx, n); err != nil {
					t.Logf("cleanup: remove %s: %v", n, err)
				}
			}()
		}
		wg.Wait()
	})
}

// opsAdapter is a connected adapter of the test, subscribing nothing, as
// an operator's tool has one.
func opsAdapter(t testing.TB, url string) broker.Adapter {
	t.Helper()
	a, err := broker.Resolve(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{NodeID: "ops-test", Serializer: broker.JSON{}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return a
}

// send sends user ids to the short channel ch, with header user-header.
func (f *fixture) send(ch string, ids ...int) {
	f.t.Helper()
	for _, id := range ids {
		if err := f.p.SendToChannel(context.Background(), ch, user{ID: id}, broker.WithHeader("user-header", "kept")); err != nil {
			f.t.Fatal(err)
		}
		f.sent.Add(1)
	}
}

// list is dlq.List of queue (a full name), on a new connection as an
// operator's next command reads it. (A Kafka adapter that browsed a queue
// before another one first removed dead letters from it may take seconds
// to see those removals.)
func (f *fixture) list(queue string) []dlq.Entry {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := opsAdapter(f.t, f.tg.url())
	defer a.Close(ctx)
	es, err := dlq.List(ctx, a, queue, dlq.Filter{})
	if err != nil {
		f.t.Fatal(err)
	}
	return es
}

// waitDead waits until queue holds n dead letters.
func (f *fixture) waitDead(queue string, n int) []dlq.Entry {
	f.t.Helper()
	var es []dlq.Entry
	channelstest.EventuallyTrue(f.t, 40*time.Second, fmt.Sprintf("%d dead letters in %s", n, queue), func() bool {
		var err error
		es, err = dlq.List(context.Background(), f.ops, queue, dlq.Filter{})
		return err == nil && len(es) == n
	})
	return es
}

// deadLetters sends users 1..orders to orders and then users
// 101..100+refunds to refunds, and waits for their dead letters, oldest
// first.
func (f *fixture) deadLetters(orders, refunds int) []dlq.Entry {
	f.t.Helper()
	for i := 1; i <= orders; i++ {
		f.send("orders", i)
	}
	f.waitDead(f.queue, orders)
	for i := 1; i <= refunds; i++ {
		f.send("refunds", 100+i)
	}
	return f.waitDead(f.queue, orders+refunds)
}

// byUser finds the entry of user id.
func byUser(t testing.TB, es []dlq.Entry, id int) dlq.Entry {
	t.Helper()
	for _, e := range es {
		var u user
		if json.Unmarshal(e.Payload, &u) == nil && u.ID == id {
			return e
		}
	}
	t.Fatalf("no dead letter of user %d in %d entries", id, len(es))
	return dlq.Entry{}
}

// run runs the command in-process on the fixture's broker and namespace.
func (f *fixture) run(args ...string) (code int, stdout, stderr string) {
	return runCommand(f.tg.url(), f.ns, args...)
}

func runCommand(url, ns string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	full := append([]string{"channels", "--adapter", url, "--namespace", ns, "--timeout", "40s"}, args...)
	code = command.Run(ctx, full, &out, &errb)
	return code, out.String(), errb.String()
}

// mustRun runs the command and fails the test unless it exits 0.
func (f *fixture) mustRun(args ...string) string {
	f.t.Helper()
	code, out, errs := f.run(args...)
	if code != 0 {
		f.t.Fatalf("channels %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
	}
	return out
}

// expectCode runs the command and checks its exit code and that stderr
// contains want.
func (f *fixture) expectCode(code int, want string, args ...string) {
	f.t.Helper()
	c, out, errs := f.run(args...)
	if c != code || !strings.Contains(errs, want) {
		f.t.Fatalf("channels %v: exit %d, want %d with %q on stderr\nstdout: %s\nstderr: %s", args, c, code, want, out, errs)
	}
}

// decode reads JSON output.
func decode[T any](t testing.TB, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not the JSON expected: %v\n%s", err, out)
	}
	return v
}

// checkReplayed checks a message a replay delivered: first attempt, no
// failure headers, the user header kept, a trail naming queue and one of
// ids.
func checkReplayed(t testing.TB, m *channels.Message, queue string, ids map[string]bool) {
	t.Helper()
	if m.Attempt != 1 {
		t.Errorf("replayed message on attempt %d", m.Attempt)
	}
	for k := range m.Headers {
		if strings.HasPrefix(k, "x-error-") || strings.HasPrefix(k, "x-original-") || k == broker.HeaderRedeliveredCount {
			t.Errorf("replayed message carries %s: %v", k, m.Headers)
		}
	}
	if m.Headers["user-header"] != "kept" {
		t.Errorf("user header lost: %v", m.Headers)
	}
	trail := dlq.ParseTrail(m.Headers[dlq.HeaderReplayedFrom])
	if len(trail) != 1 || trail[0].Queue != queue || !ids[trail[0].ID] || !strings.HasPrefix(trail[0].Error, "Error: bad user ") {
		t.Errorf("%s = %q, want one record of %s and one of %v", dlq.HeaderReplayedFrom, m.Headers[dlq.HeaderReplayedFrom], queue, ids)
	}
}

// userIDs are the user ids of messages.
func userIDs(t testing.TB, ms []*channels.Message) []int {
	t.Helper()
	out := make([]int, 0, len(ms))
	for _, m := range ms {
		var u user
		if err := m.Decode(&u); err != nil {
			t.Fatalf("payload %s: %v", m.Payload, err)
		}
		out = append(out, u.ID)
	}
	return out
}

// runWith runs the command in-process with ctx and writers of the caller.
func runWith(ctx context.Context, url, ns string, stdout, stderr *channelstest.SyncBuffer, args ...string) int {
	full := append([]string{"channels", "--adapter", url, "--namespace", ns, "--timeout", "40s"}, args...)
	return command.Run(ctx, full, stdout, stderr)
}

// tempDir is a directory removed when the test binary exits (TestMain).
func tempDir() (string, error) {
	dir, err := os.MkdirTemp("", "channels-ops-")
	if err == nil {
		tempDirs.Store(dir, true)
	}
	return dir, err
}

var tempDirs sync.Map

func TestMain(m *testing.M) {
	code := m.Run()
	tempDirs.Range(func(k, _ any) bool { _ = os.RemoveAll(k.(string)); return true })
	os.Exit(code)
}
