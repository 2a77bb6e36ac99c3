package channelstest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// Target is one adapter the suite runs against.
type Target struct {
	// Name labels the specs ("memory", "redis", "redis-cluster", ...).
	Name string
	// NewAdapter returns a fresh adapter; every simulated node gets its own.
	NewAdapter func() (broker.Adapter, error)
	// Probe tells whether the broker is reachable (nil: always).
	Probe func() error
	// ChannelOptions are added to every channel declared by the suite, to
	// shorten adapter timings (claim intervals, ack waits) for tests.
	ChannelOptions []any
	// Timeout bounds each Eventually (default 10s).
	Timeout time.Duration
	// Ordered, when set, are the channel options (in place of
	// ChannelOptions) of a channel that must keep one order for all its
	// messages: Kafka orders per partition, so such a channel gets a topic
	// of one partition.
	Ordered []any

	// The fields below are the hooks of the fault suite (fault_test.go). A
	// scenario whose hook is missing is not declared for the target (no
	// skipped spec); a new adapter fills what its broker allows and gets
	// every scenario that applies.

	// Processes tells that the broker can be shared by consumers in other
	// OS processes (false for the in-process memory bus). The crash and
	// hostile-input scenarios run their consumers in child processes.
	Processes bool
	// ClaimTime is how long a message held by a member that went silent
	// waits before another member of its group gets it, with the target's
	// ChannelOptions (redis: MinIdleTime, 1s in redisTestTimings). 0: the
	// target has no such timer (memory), so the slow-handler scenario does
	// not apply. The crash scenario also waits a few ClaimTimes for late
	// redeliveries before it counts.
	ClaimTime time.Duration
	// Restart stops and starts the broker again, keeping its data, and
	// returns once it answers (redis: `scripts/services.sh restart redis`).
	// It must fail when the broker was not actually restarted. It disturbs
	// the shared broker: specs using it run only in the serial phase.
	Restart func(ctx context.Context) error
	// BrokerDown stops the broker and returns once it no longer answers;
	// BrokerUp starts it again and returns once it answers (redis:
	// `scripts/services.sh down|up redis`). Serial phase only, like Restart.
	BrokerDown, BrokerUp func(ctx context.Context) error
	// Hostile writes one entry with the broker's plain driver, bypassing the
	// library's encoding, to channel (the broker-side name), and returns the
	// id the adapter will report as Message.ID and x-original-id. It returns
	// an error wrapping errors.ErrUnsupported for an entry the broker cannot
	// express (that case is then skipped). Redis: XADD of raw fields.
	Hostile func(ctx context.Context, channel string, e RawEntry) (string, error)
	// Linked returns a fresh adapter whose every connection to the broker
	// goes through link-fault proxies (links), for the frozen-link,
	// reset and latency scenarios (fault_link_test.go). Nil for a broker
	// reached without a network link (memory, the in-process NATS server).
	Linked func() (broker.Adapter, *Links, error)
	// AfterSpec, when set, runs after each of the target's specs, once the
	// spec's nodes stopped: to delete what the spec declared on the broker.
	AfterSpec func()
	// SlowLink, when set, are the channel options (in place of
	// ChannelOptions) of a member whose link has a round trip of 400 ms.
	SlowLink []any
	// Cluster, when set, describes a clustered broker: the cluster fault
	// scenarios (node-kill, rolling-restart, minority-partitioned) run on it
	// (fault_cluster.go). They stop and start its nodes, so a cluster target
	// runs alone (make test-cluster, one profile at a time).
	Cluster *Cluster
}

// Cluster are the hooks of a clustered broker's fault scenarios. Node
// indexes run from 0 to Nodes-1.
type Cluster struct {
	// Nodes is the number of nodes.
	Nodes int
	// Leader returns the node that leads channel (its stream or queue
	// leader, the leader of its first partition, the master of its slot)
	// once the channel exists.
	Leader func(ctx context.Context, channel string) (int, error)
	// Kill kills node i at once (SIGKILL); Start starts it again, keeping
	// its data, and returns once it serves and has rejoined the cluster.
	Kill, Start func(ctx context.Context, i int) error
	// Isolate cuts node i off from the other nodes (its clients still reach
	// it); Heal joins it again and returns once the cluster is whole. Nil:
	// no minority-partitioned scenario.
	Isolate, Heal func(ctx context.Context, i int) error
	// NewAdapterOn returns an adapter that reaches node i only (for the
	// sends through an isolated node).
	NewAdapterOn func(i int) (broker.Adapter, error)
	// Lossy tells that an accepted send may be lost with a node under the
	// target's settings (Redis' asynchronous replication): the scenarios
	// then report what was lost instead of failing.
	Lossy bool
}

// RawEntry is a message as a third-party producer may write it.
type RawEntry struct {
	// Payload is the body, as is (not serialized by the library).
	Payload []byte
	// NoPayload writes an entry without a payload at all (Redis: no
	// "payload" field); Payload is ignored.
	NoPayload bool
	// Headers is the headers blob as the adapter stores it (Redis: the
	// "headers" field, normally the serialized map); nil writes none.
	Headers []byte
}

var (
	targetsMu sync.Mutex
	targets   []Target
	// registered are the top-level spec containers, declared by Run.
	registered []func()
)

// specs records a top-level container; Run declares it.
func specs(f func()) bool {
	registered = append(registered, f)
	return true
}

// setTargets records the targets of this test binary (Run, Main).
func setTargets(ts []Target) {
	targetsMu.Lock()
	defer targetsMu.Unlock()
	targets = append([]Target(nil), ts...)
}

// Run runs the conformance, fault, limits and observability suites (Ginkgo
// specs) against each target, each target's specs labelled with its Name.
// Call it once per test binary, from a Test function:
//
//	func TestConformance(t *testing.T) {
//		channelstest.Run(t, channelstest.Target{Name: "mine", NewAdapter: newMine})
//	}
//
// A scenario whose Target hook is missing is not declared for that target.
// Ginkgo's flags select specs (-ginkgo.label-filter=mine, -ginkgo.focus=...).
// Targets with Processes set also need Main in the package's TestMain.
func Run(t *testing.T, ts ...Target) {
	t.Helper()
	setTargets(ts)
	for _, f := range registered {
		f()
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "channels conformance")
}

// Main is the TestMain of a package that calls Run with targets whose
// consumers run in child processes (Target.Processes): when the fault suite
// re-executes the test binary as a consumer child, Main runs the child and
// exits; otherwise it runs the tests. Pass the same targets as to Run.
//
//	func TestMain(m *testing.M) { channelstest.Main(m, targets()...) }
func Main(m *testing.M, ts ...Target) {
	if spec := os.Getenv(faultChildEnv); spec != "" {
		setTargets(ts)
		os.Exit(runFaultChild(spec))
	}
	os.Exit(m.Run())
}

// required reports whether a missing broker must fail the run (CI).

var _ = specs(func() {
	Describe("conformance", func() {
		targetsMu.Lock()
		ts := append([]Target(nil), targets...)
		targetsMu.Unlock()
		for _, tg := range ts {
			Describe(tg.Name, Label(tg.Name), func() {
				conformance(tg)
			})
		}
	})
})

var seq atomic.Uint64

// uniq returns a channel or group name unique to this run and spec.
func uniq(base string) string {
	return fmt.Sprintf("%s.%d.%d", base, os.Getpid(), seq.Add(1))
}

// harness builds nodes (plugins with their own adapter) for one spec.
type harness struct {
	tg      Target
	timeout time.Duration
}

func newHarness(tg Target) *harness {
	h := &harness{tg: tg, timeout: tg.Timeout}
	if h.timeout == 0 {
		h.timeout = 10 * time.Second
	}
	return h
}

// fast is the retry backoff used by the suite unless a spec sets its own.
var fast = channels.WithBackoff(broker.ConstantBackoff(20 * time.Millisecond))

// plugin builds a plugin on a fresh adapter without starting it.
func (h *harness) plugin(opts ...channels.Option) *channels.Plugin {
	GinkgoHelper()
	a, err := h.tg.NewAdapter()
	Expect(err).NotTo(HaveOccurred())
	all := append([]channels.Option{channels.WithAdapter(a), fast}, opts...)
	p, err := channels.New(all...)
	Expect(err).NotTo(HaveOccurred())
	return p
}

// withTargetOptions adds the target's channel options to every channel of s.
func (h *harness) withTargetOptions(cs channels.Channels) channels.Channels {
	for k, c := range cs {
		c.AdapterOptions = append(append([]any(nil), c.AdapterOptions...), h.tg.ChannelOptions...)
		cs[k] = c
	}
	return cs
}

// node registers schemas on a new plugin, starts it and stops it after the spec.
func (h *harness) node(schemas []any, opts ...channels.Option) *channels.Plugin {
	GinkgoHelper()
	return h.start(h.plugin(opts...), schemas)
}

// nodeOn is node on a given adapter.
func (h *harness) nodeOn(a broker.Adapter, schemas []any, opts ...channels.Option) *channels.Plugin {
	GinkgoHelper()
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(a), fast}, opts...)...)
	Expect(err).NotTo(HaveOccurred())
	return h.start(p, schemas)
}

func (h *harness) start(p *channels.Plugin, schemas []any) *channels.Plugin {
	GinkgoHelper()
	for _, s := range schemas {
		if sv, ok := s.(*Service); ok {
			sv.Channels = h.withTargetOptions(sv.Channels)
		}
	}
	Expect(p.Register(schemas...)).To(Succeed())
	Expect(p.Start(context.Background())).To(Succeed())
	DeferCleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

// sender starts a plugin with no channels, for publishing.
func (h *harness) sender(opts ...channels.Option) *channels.Plugin {
	GinkgoHelper()
	return h.node(nil, opts...)
}

func decodeAll[T any](msgs []*broker.Message) []T {
	out := make([]T, 0, len(msgs))
	for _, m := range msgs {
		var v T
		Expect(m.Decode(&v)).To(Succeed())
		out = append(out, v)
	}
	return out
}

// prepare is the BeforeEach of a target's specs: the broker must answer
// (a failure under CHANNELS_E2E_REQUIRE=1, else a skip), then a fresh
// harness with the suite's polling defaults.
func prepare(tg Target) *harness {
	if tg.Probe != nil {
		if err := tg.Probe(); err != nil {
			if Required() {
				Fail(fmt.Sprintf("%s broker unreachable with CHANNELS_E2E_REQUIRE=1: %v", tg.Name, err))
			}
			Skip(fmt.Sprintf("%s broker unreachable: %v", tg.Name, err))
		}
	}
	if tg.AfterSpec != nil {
		DeferCleanup(tg.AfterSpec) // registered first, so it runs after the nodes' stops
	}
	h := newHarness(tg)
	SetDefaultEventuallyTimeout(h.timeout)
	SetDefaultEventuallyPollingInterval(10 * time.Millisecond)
	SetDefaultConsistentlyDuration(300 * time.Millisecond)
	return h
}

// sendSpread sends total sequence-numbered payloads from senders goroutines
// and returns a wait for them.
func sendSpread(snd *channels.Plugin, ch string, total, senders int) func() {
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer GinkgoRecover()
			defer wg.Done()
			for i := s; i < total; i += senders {
				Expect(snd.SendToChannel(context.Background(), ch, faultPayload{Seq: i})).To(Succeed())
			}
		}()
	}
	return wg.Wait
}
