package channels_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/onsi/gomega"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
	"github.com/microchannels/channels/memory"
)

// inbox records the messages of one channel.
type inbox struct {
	mu   sync.Mutex
	msgs []*channels.Message
	ctxs []*channels.CallInfo
}

func (b *inbox) handle(ctx context.Context, m *channels.Message) error {
	ci, _ := channels.FromContext(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	cp := *m
	b.msgs = append(b.msgs, &cp)
	b.ctxs = append(b.ctxs, ci)
	return nil
}

func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

func (b *inbox) all() []*channels.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

func (b *inbox) payloads() []string {
	var out []string
	for _, m := range b.all() {
		out = append(out, string(m.Payload))
	}
	return out
}

// batchPlugin starts a plugin on a bus of its own with channel "c" (MaxInFlight
// 1, so deliveries come in the order of the channel) read into the inbox.
func batchPlugin(t *testing.T, a broker.Adapter, opts ...channels.Option) (*channels.Plugin, *inbox) {
	t.Helper()
	if a == nil {
		a = memory.New(memory.WithBus(memory.NewBus()))
	}
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(a)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	in := &inbox{}
	s := &svc{Name: "batch", Channels: channels.Channels{"c": {MaxInFlight: 1, Handler: in.handle}}}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return p, in
}

func seq(n int) []channels.BatchItem {
	items := make([]channels.BatchItem, n)
	for i := range items {
		items[i].Payload = i
	}
	return items
}

func numbers(n int, skip ...int) []string {
	var out []string
	for i := range n {
		if !slices.Contains(skip, i) {
			out = append(out, strconv.Itoa(i))
		}
	}
	return out
}

// TestSendBatch: every message is delivered once, in the batch order, with
// the batch's options and then its own.
func TestSendBatch(t *testing.T) {
	g := gomega.NewWithT(t)
	p, in := batchPlugin(t, nil)
	ctx := context.Background()
	items := seq(100)
	items[7].Options = []channels.SendOption{channels.WithHeader("own", "7"), channels.WithHeader("k", "item")}
	g.Expect(p.SendBatch(ctx, "c", items, channels.WithHeader("k", "batch"))).To(gomega.Succeed())
	g.Expect(p.SendBatch(ctx, "c", nil)).To(gomega.Succeed())
	g.Eventually(in.count).Should(gomega.Equal(100))
	g.Consistently(in.count).Should(gomega.Equal(100))
	g.Expect(in.payloads()).To(gomega.Equal(numbers(100)))
	for i, m := range in.all() {
		want := map[string]string{"k": "batch"}
		if i == 7 {
			want = map[string]string{"k": "item", "own": "7"}
		}
		g.Expect(m.Headers).To(gomega.Equal(want), "message %d", i)
	}
	// BatchOf takes a typed slice as it is.
	g.Expect(p.SendBatch(ctx, "c", channels.BatchOf([]int{100, 101}...))).To(gomega.Succeed())
	g.Eventually(in.count).Should(gomega.Equal(102))
	g.Expect(in.payloads()[100:]).To(gomega.Equal([]string{"100", "101"}))
}

// TestSendBatchFailsOnlyTheBadItems: a payload that does not serialize, an
// invalid option of one item and a send option the adapter does not know
// fail their own item; the other messages are sent, and the BatchError
// tells which is which.
func TestSendBatchFailsOnlyTheBadItems(t *testing.T) {
	g := gomega.NewWithT(t)
	p, in := batchPlugin(t, nil)
	items := seq(10)
	items[2].Payload = map[string]any{"f": func() {}}
	items[5].Options = []channels.SendOption{channels.WithHeader("", "no name")}
	items[8].Options = []channels.SendOption{channels.WithSendOptions(struct{ Foreign bool }{true})}
	err := p.SendBatch(context.Background(), "c", items)
	var be *channels.BatchError
	g.Expect(errors.As(err, &be)).To(gomega.BeTrue(), "%v", err)
	g.Expect(be.Channel).To(gomega.Equal("c"))
	g.Expect(be.Errors).To(gomega.HaveLen(10))
	g.Expect(be.Failed()).To(gomega.Equal([]int{2, 5, 8}))
	g.Expect(be.Sent()).To(gomega.Equal(7))
	var ee *channels.EncodeError
	g.Expect(errors.As(be.Err(2), &ee)).To(gomega.BeTrue())
	g.Expect(be.Err(5)).To(gomega.MatchError(channels.ErrInvalidOption))
	g.Expect(be.Err(8)).To(gomega.MatchError(channels.ErrInvalidOption))
	g.Expect(be.Err(0)).To(gomega.Succeed())
	g.Expect(err).To(gomega.MatchError(channels.ErrEncode))
	g.Expect(err).To(gomega.MatchError(channels.ErrInvalidOption))
	g.Expect(err).NotTo(gomega.MatchError(channels.ErrPublish))
	g.Expect(err.Error()).To(gomega.ContainSubstring(`3 of 10 messages to "c" not sent; message 2:`))
	g.Eventually(in.count).Should(gomega.Equal(7))
	g.Consistently(in.count).Should(gomega.Equal(7))
	g.Expect(in.payloads()).To(gomega.Equal(numbers(10, 2, 5, 8)))
}

// TestSendBatchWholeBatchErrors: before Start, after Stop, with a bad
// channel name, bad batch options or an ended ctx, every item fails with
// the error a single send gets, and nothing is sent.
func TestSendBatchWholeBatchErrors(t *testing.T) {
	g := gomega.NewWithT(t)
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	g.Expect(err).NotTo(gomega.HaveOccurred())
	ctx := context.Background()
	failsAll := func(err error, want error) {
		t.Helper()
		var be *channels.BatchError
		g.Expect(errors.As(err, &be)).To(gomega.BeTrue(), "%v", err)
		g.Expect(be.Failed()).To(gomega.Equal([]int{0, 1, 2}))
		for _, e := range be.Errors {
			g.Expect(e).To(gomega.MatchError(want))
		}
		g.Expect(err).To(gomega.MatchError(want))
	}
	failsAll(p.SendBatch(ctx, "c", seq(3)), channels.ErrNotConnected)
	g.Expect(p.Start(ctx)).To(gomega.Succeed())
	failsAll(p.SendBatch(ctx, "bad name", seq(3)), channels.ErrInvalidOption)
	failsAll(p.SendBatch(ctx, "c", seq(3), channels.WithHeader("", "x")), channels.ErrInvalidOption)
	done, cancel := context.WithCancel(ctx)
	cancel()
	failsAll(p.SendBatch(done, "c", seq(3)), context.Canceled)
	failsAll(p.SendBatch(done, "c", seq(3)), channels.ErrPublish)
	g.Expect(p.Stop(ctx)).To(gomega.Succeed())
	failsAll(p.SendBatch(ctx, "c", seq(3)), channels.ErrClosed)
}

// TestSendBatchContextHeaders: outside a handler each message gets a
// request id of its own and the $meta of ctx; from a handler the messages
// carry its request id, its id as their parent, the caller and the channel.
func TestSendBatchContextHeaders(t *testing.T) {
	g := gomega.NewWithT(t)
	bus := memory.NewBus()
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))))
	g.Expect(err).NotTo(gomega.HaveOccurred())
	first, next := &inbox{}, &inbox{}
	var parent atomic.Pointer[channels.CallInfo]
	s := &svc{Name: "ctx"}
	s.Channels = channels.Channels{
		"first": channels.On(func(ctx context.Context, m *channels.Message) error {
			ci, _ := channels.FromContext(ctx)
			parent.Store(ci)
			if err := first.handle(ctx, m); err != nil {
				return err
			}
			return p.SendBatch(ctx, "next", seq(3))
		}),
		"next": channels.On(next.handle),
	}
	g.Expect(p.Register(s)).To(gomega.Succeed())
	g.Expect(p.Start(context.Background())).To(gomega.Succeed())
	defer p.Stop(context.Background())

	ctx := channels.WithMeta(context.Background(), map[string]any{"tenant": "acme", "n": 2.0})
	g.Expect(p.SendBatch(ctx, "first", seq(2))).To(gomega.Succeed())
	g.Eventually(next.count).Should(gomega.Equal(6))
	ids := map[string]bool{}
	for _, m := range first.all() {
		g.Expect(m.Headers[broker.HeaderLevel]).To(gomega.Equal("0"))
		g.Expect(m.Headers[broker.HeaderMeta]).NotTo(gomega.BeEmpty())
		ids[m.Headers[broker.HeaderRequestID]] = true
	}
	g.Expect(ids).To(gomega.HaveLen(2), "one request id per message outside a handler")
	g.Expect(ids).NotTo(gomega.HaveKey(""))
	next.mu.Lock()
	defer next.mu.Unlock()
	byParent := map[string]int{}
	for i, ci := range next.ctxs {
		g.Expect(ci.Meta).To(gomega.Equal(map[string]any{"tenant": "acme", "n": 2.0}))
		g.Expect(ci.Caller).To(gomega.Equal("ctx"))
		g.Expect(ci.ParentChannel).To(gomega.Equal("first"))
		g.Expect(ci.Level).To(gomega.Equal(2))
		g.Expect(ids).To(gomega.HaveKey(ci.RequestID))
		g.Expect(next.msgs[i].Headers[broker.HeaderParentID]).To(gomega.Equal(ci.ParentID))
		byParent[ci.ParentID]++
	}
	g.Expect(byParent).To(gomega.HaveLen(2))
	for _, n := range byParent {
		g.Expect(n).To(gomega.Equal(3))
	}
}

// TestSendBatchInterceptors: an interceptor with a SendBatch hook sees the
// batch once; one with only a SendToChannel hook makes every message go
// through it on its own, with the results still per message.
func TestSendBatchInterceptors(t *testing.T) {
	t.Run("batch hook", func(t *testing.T) {
		g := gomega.NewWithT(t)
		var batches, singles atomic.Int32
		ic := hooks.Interceptor{Name: "both",
			SendToChannel: func(next hooks.SendFunc) hooks.SendFunc {
				return func(ctx context.Context, ch string, p any, opts ...broker.PublishOption) error {
					singles.Add(1)
					return next(ctx, ch, p, opts...)
				}
			},
			SendBatch: func(next hooks.SendBatchFunc) hooks.SendBatchFunc {
				return func(ctx context.Context, ch string, items []hooks.BatchItem, opts ...broker.PublishOption) []error {
					batches.Add(1)
					return next(ctx, ch, items, append(opts, broker.WithHeader("via", "batch"))...)
				}
			}}
		p, in := batchPlugin(t, nil, channels.WithInterceptors(ic, channels.Logging(slog.New(slog.DiscardHandler))))
		g.Expect(p.SendBatch(context.Background(), "c", seq(5))).To(gomega.Succeed())
		g.Eventually(in.count).Should(gomega.Equal(5))
		g.Expect(batches.Load()).To(gomega.Equal(int32(1)))
		g.Expect(singles.Load()).To(gomega.BeZero())
		for _, m := range in.all() {
			g.Expect(m.Headers).To(gomega.HaveKeyWithValue("via", "batch"))
		}
	})
	t.Run("batch hook only", func(t *testing.T) {
		g := gomega.NewWithT(t)
		var batches atomic.Int32
		ic := hooks.Interceptor{Name: "batch-only",
			SendBatch: func(next hooks.SendBatchFunc) hooks.SendBatchFunc {
				return func(ctx context.Context, ch string, items []hooks.BatchItem, opts ...broker.PublishOption) []error {
					batches.Add(1)
					return next(ctx, ch, items, opts...)
				}
			}}
		p, in := batchPlugin(t, nil, channels.WithInterceptors(ic))
		g.Expect(p.SendBatch(context.Background(), "c", seq(3))).To(gomega.Succeed())
		g.Expect(p.SendToChannel(context.Background(), "c", "single")).To(gomega.Succeed())
		g.Eventually(in.count).Should(gomega.Equal(4))
		g.Expect(batches.Load()).To(gomega.Equal(int32(1)))
	})
	_, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))),
		channels.WithInterceptors(hooks.Interceptor{Name: "none"}))
	if !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("an interceptor without a hook: %v", err)
	}
	t.Run("send hook only", func(t *testing.T) {
		g := gomega.NewWithT(t)
		var singles atomic.Int32
		ic := hooks.Interceptor{Name: "single",
			SendToChannel: func(next hooks.SendFunc) hooks.SendFunc {
				return func(ctx context.Context, ch string, p any, opts ...broker.PublishOption) error {
					singles.Add(1)
					return next(ctx, ch, p, append(opts, broker.WithHeader("via", "single"))...)
				}
			}}
		p, in := batchPlugin(t, nil, channels.WithInterceptors(ic))
		items := seq(40)
		items[3].Payload = map[string]any{"f": func() {}}
		err := p.SendBatch(context.Background(), "c", items)
		var be *channels.BatchError
		g.Expect(errors.As(err, &be)).To(gomega.BeTrue(), "%v", err)
		g.Expect(be.Failed()).To(gomega.Equal([]int{3}))
		g.Expect(singles.Load()).To(gomega.Equal(int32(40)))
		g.Eventually(in.count).Should(gomega.Equal(39))
		got := in.payloads()
		slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
		g.Expect(got).To(gomega.Equal(numbers(40, 3)))
		for _, m := range in.all() {
			g.Expect(m.Headers).To(gomega.HaveKeyWithValue("via", "single"))
		}
	})
}

// TestSendBatchTelemetry: sends and send errors are counted per message,
// and every message has a producer span of its own whose context it
// carries.
func TestSendBatchTelemetry(t *testing.T) {
	g := gomega.NewWithT(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	p, in := batchPlugin(t, nil, channels.WithMeterProvider(mp), channels.WithTracerProvider(tp))
	items := seq(6)
	items[4].Payload = map[string]any{"f": func() {}}
	g.Expect(p.SendBatch(context.Background(), "c", items)).To(gomega.MatchError(channels.ErrEncode))
	g.Eventually(in.count).Should(gomega.Equal(5))

	var rm metricdata.ResourceMetrics
	g.Expect(reader.Collect(context.Background(), &rm)).To(gomega.Succeed())
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range d.DataPoints {
					sums[m.Name] += dp.Value
				}
			}
		}
	}
	g.Expect(sums[channels.MetricSent]).To(gomega.Equal(int64(5)))
	g.Expect(sums[channels.MetricSendErrors]).To(gomega.Equal(int64(1)))

	var sendSpans int
	failed := 0
	for _, s := range spans.Ended() {
		if s.Name() == "send c" {
			sendSpans++
			if s.Status().Code.String() == "Error" {
				failed++
			}
		}
	}
	g.Expect(sendSpans).To(gomega.Equal(6))
	g.Expect(failed).To(gomega.Equal(1))
	parents := map[string]bool{}
	for _, m := range in.all() {
		g.Expect(m.Headers).To(gomega.HaveKey("traceparent"))
		parents[m.Headers["traceparent"]] = true
	}
	g.Expect(parents).To(gomega.HaveLen(5))
}

// plainAdapter hides the BatchPublisher of the adapter it wraps.
type plainAdapter struct{ broker.Adapter }

// TestSendBatchWithoutBatchPublisher: an adapter without PublishBatch gets
// the messages through Publish, each with its own result.
func TestSendBatchWithoutBatchPublisher(t *testing.T) {
	g := gomega.NewWithT(t)
	a := plainAdapter{memory.New(memory.WithBus(memory.NewBus()))}
	if _, ok := any(a).(broker.BatchPublisher); ok {
		t.Fatal("plainAdapter must not implement BatchPublisher")
	}
	p, in := batchPlugin(t, a)
	items := seq(50)
	items[9].Options = []channels.SendOption{channels.WithSendOptions(struct{ Foreign bool }{true})}
	err := p.SendBatch(context.Background(), "c", items)
	var be *channels.BatchError
	g.Expect(errors.As(err, &be)).To(gomega.BeTrue(), "%v", err)
	g.Expect(be.Failed()).To(gomega.Equal([]int{9}))
	g.Eventually(in.count).Should(gomega.Equal(49))
	got := in.payloads()
	slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	g.Expect(got).To(gomega.Equal(numbers(50, 9)))
}
