package memory_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"go.uber.org/goleak"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The examples import the plugin, hence go-micro, whose init starts these.
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config.(*config).run"),
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config.(*config).run.func2"),
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config/loader/memory.(*memory).Watch.func1"),
		goleak.IgnoreAnyFunction("go-micro.dev/v4/config/loader/memory.(*watcher).Next"),
		goleak.IgnoreAnyFunction("github.com/patrickmn/go-cache.(*janitor).Run"),
		// Ginkgo's signal watcher, started by the conformance suite, lives as long as the process.
		goleak.IgnoreAnyFunction("github.com/onsi/ginkgo/v2/internal/interrupt_handler.(*InterruptHandler).registerForInterrupts.func2"),
	)
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(5 * time.Second).WithPolling(2 * time.Millisecond).Should(gomega.BeTrue())
}

func channel(name string, h broker.Handler) *broker.Channel {
	return &broker.Channel{Name: name, Group: "g", MaxInFlight: 2, Handler: h,
		Retry: broker.RetryPolicy{MaxRetries: 2, Backoff: broker.ConstantBackoff(time.Millisecond)}}
}

func TestLifecycleErrors(t *testing.T) {
	a := memory.New(memory.WithBus(memory.NewBus()))
	ctx := context.Background()
	if err := a.Publish(ctx, "c", &broker.Outgoing{}); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("publish before connect: %v", err)
	}
	if _, err := a.Subscribe(ctx, channel("c", nil)); !errors.Is(err, broker.ErrNotConnected) {
		t.Fatalf("subscribe before connect: %v", err)
	}
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Subscribe(ctx, channel("c", nil)); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("subscribe without handler: %v", err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "c", &broker.Outgoing{}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

func TestRetriesThenDeadLetterAndStats(t *testing.T) {
	bus := memory.NewBus()
	a := memory.New(memory.WithBus(bus))
	ctx := context.Background()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	ch := channel("orders", func(ctx context.Context, m *broker.Message) error {
		attempts.Add(1)
		return errors.New("no")
	})
	ch.DeadLetter = broker.DeadLetterPolicy{Enabled: true, Queue: "DLQ"}
	sub, err := a.Subscribe(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	sub.Start()
	if err := a.Publish(ctx, "orders", &broker.Outgoing{Payload: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	// Nobody reads the DLQ yet: it is retained for its first group.
	eventually(t, func() bool { return attempts.Load() == 3 })
	var dead atomic.Pointer[broker.Message]
	dl := channel("DLQ", func(ctx context.Context, m *broker.Message) error { dead.Store(m); return nil })
	dsub, err := a.Subscribe(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	dsub.Start()
	eventually(t, func() bool { return dead.Load() != nil })
	if got := dead.Load().Headers["x-redelivered-count"]; got != "2" {
		t.Fatalf("x-redelivered-count = %q", got)
	}
	st, ok := bus.Stats("orders", "g")
	if !ok || st.Ready != 0 || st.Pending != 0 || st.Scheduled != 0 {
		t.Fatalf("stats %+v %v", st, ok)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDrainGivesBackUnstartedMessages(t *testing.T) {
	bus := memory.NewBus()
	a := memory.New(memory.WithBus(bus))
	ctx := context.Background()
	_ = a.Connect(ctx, broker.Env{})
	release := make(chan struct{})
	var started, finished atomic.Int32
	ch := channel("c", func(ctx context.Context, m *broker.Message) error {
		started.Add(1)
		<-release
		finished.Add(1)
		return nil
	})
	sub, _ := a.Subscribe(ctx, ch)
	sub.Start()
	for range 5 {
		_ = a.Publish(ctx, "c", &broker.Outgoing{Payload: []byte(`1`)})
	}
	eventually(t, func() bool { return started.Load() == 2 })
	done := make(chan error)
	go func() { done <- sub.Drain(ctx) }()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, _ := bus.Stats("c", "g")
	// Everything was either handled to the end or given back, unstarted.
	if st.Pending != 0 || int(finished.Load()) != int(started.Load()) || st.Ready+int(finished.Load()) != 5 {
		t.Fatalf("after drain: %+v, started %d finished %d", st, started.Load(), finished.Load())
	}
	_ = a.Close(ctx)
}

func TestResolveURL(t *testing.T) {
	a, err := broker.Resolve("memory://shared")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := broker.Resolve("memory://shared")
	if a.(*memory.Adapter).Bus() != b.(*memory.Adapter).Bus() || a.(*memory.Adapter).Bus() == memory.NamedBus("") {
		t.Fatal("memory://shared must name one shared bus")
	}
	if _, err := broker.Resolve("Memory"); err != nil {
		t.Fatal(err)
	}
}

func TestRetainLimitRefusesInsteadOfDropping(t *testing.T) {
	a := memory.New(memory.WithBus(memory.NewBus()))
	ctx := context.Background()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	for i := range memory.DefaultRetainLimit {
		if err := a.Publish(ctx, "nobody", &broker.Outgoing{Payload: []byte{byte(i)}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	err := a.Publish(ctx, "nobody", &broker.Outgoing{Payload: []byte("one too many")})
	if !errors.Is(err, memory.ErrRetainLimit) || !errors.Is(err, broker.ErrPublish) {
		t.Fatalf("send past the limit: %v", err)
	}
	var got atomic.Int32
	sub, err := a.Subscribe(ctx, channel("nobody", func(context.Context, *broker.Message) error { got.Add(1); return nil }))
	if err != nil {
		t.Fatal(err)
	}
	sub.Start()
	eventually(t, func() bool { return got.Load() == memory.DefaultRetainLimit })
	if err := sub.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownAdapterOptionsAreRefused(t *testing.T) {
	a := memory.New(memory.WithBus(memory.NewBus()))
	ctx := context.Background()
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	ch := channel("c", func(context.Context, *broker.Message) error { return nil })
	ch.AdapterOptions = []any{struct{ X int }{1}}
	if _, err := a.Subscribe(ctx, ch); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("Subscribe with a foreign option: %v", err)
	}
	out := &broker.Outgoing{Payload: []byte("x"), Options: broker.PublishOptions{AdapterOptions: []any{42}}}
	if err := a.Publish(ctx, "c", out); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("Publish with a foreign option: %v", err)
	}
}

// TestPublishBatch: every group gets the batch in order with distinct ids;
// on a channel with no group, the messages past the retain limit are
// refused one by one, the others kept.
func TestPublishBatch(t *testing.T) {
	bus := memory.NewBus()
	a := memory.New(memory.WithBus(bus))
	ctx := context.Background()
	for _, err := range a.PublishBatch(ctx, "c", []*broker.Outgoing{{}, {}}) {
		if !errors.Is(err, broker.ErrNotConnected) {
			t.Fatalf("PublishBatch before Connect: %v", err)
		}
	}
	if err := a.Connect(ctx, broker.Env{}); err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)

	type got struct {
		mu  sync.Mutex
		ids []string
		pay []string
	}
	var g1, g2 got
	sub := func(group string, g *got) broker.Subscription {
		ch := channel("c", func(_ context.Context, m *broker.Message) error {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.ids = append(g.ids, m.ID)
			g.pay = append(g.pay, string(m.Payload))
			return nil
		})
		ch.Group, ch.MaxInFlight = group, 1
		s, err := a.Subscribe(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		return s
	}
	s1, s2 := sub("g1", &g1), sub("g2", &g2)
	msgs := make([]*broker.Outgoing, 20)
	want := make([]string, len(msgs))
	for i := range msgs {
		want[i] = strconv.Itoa(i)
		msgs[i] = &broker.Outgoing{Payload: []byte(want[i])}
	}
	msgs[4].Options.AdapterOptions = []any{42}
	errs := a.PublishBatch(ctx, "c", msgs)
	if len(errs) != len(msgs) || !errors.Is(errs[4], broker.ErrInvalidOption) {
		t.Fatalf("results: %v", errs)
	}
	want = append(want[:4], want[5:]...)
	for _, g := range []*got{&g1, &g2} {
		eventually(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.pay) == len(want) })
		g.mu.Lock()
		if !slices.Equal(g.pay, want) {
			t.Errorf("group received %v, want %v", g.pay, want)
		}
		if len(g.ids) != len(slices.Compact(slices.Clone(g.ids))) {
			t.Errorf("ids repeat: %v", g.ids)
		}
		g.mu.Unlock()
	}
	for _, s := range []broker.Subscription{s1, s2} {
		if err := s.Drain(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// No group: kept up to the limit, the rest refused.
	for range memory.DefaultRetainLimit - 2 {
		if err := a.Publish(ctx, "nobody", &broker.Outgoing{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	errs = a.PublishBatch(ctx, "nobody", []*broker.Outgoing{{Payload: []byte("1")}, {Payload: []byte("2")}, {Payload: []byte("3")}})
	if len(errs) != 3 || errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], memory.ErrRetainLimit) || !errors.Is(errs[2], broker.ErrPublish) {
		t.Fatalf("batch at the retain limit: %v", errs)
	}
}
