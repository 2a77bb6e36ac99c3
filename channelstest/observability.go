package channelstest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// metricsOf collects the sums of the plugin's counters, by metric and
// channel.
func metricsOf(r *sdkmetric.ManualReader) map[string]map[string]int64 {
	GinkgoHelper()
	var rm metricdata.ResourceMetrics
	Expect(r.Collect(context.Background(), &rm)).To(Succeed())
	out := map[string]map[string]int64{}
	add := func(name string, attrs attribute.Set, v int64) {
		ch, _ := attrs.Value("channel")
		if out[name] == nil {
			out[name] = map[string]int64{}
		}
		out[name][ch.AsString()] += v
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					add(m.Name, p.Attributes, int64(p.Count))
				}
			}
		}
	}
	return out
}

func observability(tg Target) {
	var hh *harness
	h := func() *harness { return hh }
	ctx := context.Background()
	var removes bool
	if a, err := tg.NewAdapter(); err == nil {
		_, rm := a.(broker.ChannelRemover)
		_, lr := a.(broker.LagReporter)
		removes = rm && lr
	}
	Describe("observability", func() {
		BeforeEach(func() { hh = prepare(tg) })

		It("reports the same metrics and outcomes for ack, retry, dead-letter and drop", func() {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			DeferCleanup(mp.Shutdown, context.Background())
			var mu sync.Mutex
			outcomes := map[string][]broker.Action{}
			observe := channels.WithObserver(func(_ context.Context, e channels.Event) {
				mu.Lock()
				defer mu.Unlock()
				outcomes[e.Channel.Name] = append(outcomes[e.Channel.Name], e.Outcome.Action)
			})
			okCh, retryCh, dlCh, dropCh, dlq := uniq("m.ok"), uniq("m.retry"), uniq("m.dl"), uniq("m.drop"), uniq("m.DLQ")
			var failedOnce atomic.Bool
			boom := errors.New("boom")
			fail := func(context.Context, *broker.Message) error { return boom }
			dead := &Recorder{}
			h().node([]any{&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.Handle)}}})
			p := h().node([]any{&Service{Name: "metrics", Channels: channels.Channels{
				okCh: channels.On(func(context.Context, *broker.Message) error { return nil }),
				retryCh: {MaxRetries: 2, Handler: func(context.Context, *broker.Message) error {
					if failedOnce.CompareAndSwap(false, true) {
						return boom
					}
					return nil
				}},
				dlCh: {MaxRetries: channels.NoRetries, Handler: fail,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlq}},
				dropCh: {MaxRetries: channels.NoRetries, Handler: fail},
			}}}, channels.WithMeterProvider(mp), observe)
			for range 3 {
				Expect(p.SendToChannel(ctx, okCh, 1)).To(Succeed())
			}
			for _, ch := range []string{retryCh, dlCh, dropCh} {
				Expect(p.SendToChannel(ctx, ch, 1)).To(Succeed())
			}
			Eventually(dead.Count).Should(Equal(1))
			settled := func() int {
				mu.Lock()
				defer mu.Unlock()
				n := 0
				for _, o := range outcomes {
					n += len(o)
				}
				return n
			}
			Eventually(settled).Should(Equal(7))
			mu.Lock()
			Expect(outcomes[okCh]).To(Equal([]broker.Action{broker.Ack, broker.Ack, broker.Ack}))
			Expect(outcomes[retryCh]).To(Equal([]broker.Action{broker.Retry, broker.Ack}))
			Expect(outcomes[dlCh]).To(Equal([]broker.Action{broker.DeadLetter}))
			Expect(outcomes[dropCh]).To(Equal([]broker.Action{broker.Drop}))
			mu.Unlock()

			m := metricsOf(reader)
			Expect(m[channels.MetricSent]).To(Equal(map[string]int64{okCh: 3, retryCh: 1, dlCh: 1, dropCh: 1}))
			Expect(m[channels.MetricReceived]).To(Equal(map[string]int64{okCh: 3, retryCh: 2, dlCh: 1, dropCh: 1}))
			Expect(m[channels.MetricHandlerTime]).To(Equal(map[string]int64{okCh: 3, retryCh: 2, dlCh: 1, dropCh: 1}))
			Expect(m[channels.MetricErrors]).To(Equal(map[string]int64{retryCh: 1, dlCh: 1, dropCh: 1}))
			Expect(m[channels.MetricRetries]).To(Equal(map[string]int64{retryCh: 1}))
			Expect(m[channels.MetricDeadLettered]).To(Equal(map[string]int64{dlCh: 1}))
			Expect(m[channels.MetricDropped]).To(Equal(map[string]int64{dropCh: 1}))
			Expect(m[channels.MetricActive]).To(Equal(map[string]int64{okCh: 0, retryCh: 0, dlCh: 0, dropCh: 0}))
			Expect(m[channels.MetricPending]).To(HaveKeyWithValue(okCh, int64(0)))
		})

		// Only for adapters that can remove a channel and report its groups.
		itIf(removes, "removes a channel it created, groups included (ChannelRemover)", func() {
			ch, group := uniq("test.remove.topic"), uniq("removegroup")
			rec := &Recorder{}
			p := h().node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {Group: group, Handler: rec.Handle}}}})
			Expect(p.SendToChannel(ctx, ch, 1)).To(Succeed())
			Eventually(rec.Count).Should(Equal(1))
			rm := p.Adapter().(broker.ChannelRemover)
			lr := p.Adapter().(broker.LagReporter)
			_, err := lr.Lag(ctx, ch, group)
			Expect(err).NotTo(HaveOccurred())
			Expect(rm.RemoveChannel(ctx, ch)).To(Succeed())
			_, err = lr.Lag(ctx, ch, group)
			Expect(err).To(HaveOccurred(), "the group is gone with its channel")
			Expect(rm.RemoveChannel(ctx, ch)).To(Succeed(), "removing twice is not an error")
		})

		It("traces a chain of two channels with parent-child spans carried in headers", func() {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			DeferCleanup(tp.Shutdown, context.Background())
			first, second := uniq("t.first"), uniq("t.second")
			done := make(chan struct{}, 1)
			var forward channels.SendFunc
			s := &Service{Name: "traced", Channels: channels.Channels{
				first: channels.On(func(ctx context.Context, m *broker.Message) error {
					return forward(ctx, second, 2)
				}),
				second: channels.On(func(ctx context.Context, m *broker.Message) error {
					done <- struct{}{}
					return nil
				}),
			}}
			p := h().node([]any{s}, channels.WithTracerProvider(tp))
			forward = p.SendToChannel
			ctx, root := tp.Tracer("test").Start(ctx, "root")
			Expect(p.SendToChannel(ctx, first, 1)).To(Succeed())
			root.End()
			Eventually(done).Should(Receive())
			byName := func() map[string]sdktrace.ReadOnlySpan {
				out := map[string]sdktrace.ReadOnlySpan{}
				for _, sp := range rec.Ended() {
					out[sp.Name()] = sp
				}
				return out
			}
			Eventually(func() int { return len(byName()) }).Should(Equal(5))
			spans := byName()
			chain := []string{"root", "send " + first, "process " + first, "send " + second, "process " + second}
			for i := 1; i < len(chain); i++ {
				child, parent := spans[chain[i]], spans[chain[i-1]]
				Expect(child).NotTo(BeNil(), chain[i])
				Expect(child.Parent().SpanID()).To(Equal(parent.SpanContext().SpanID()), "%s is a child of %s", chain[i], chain[i-1])
				Expect(child.SpanContext().TraceID()).To(Equal(spans["root"].SpanContext().TraceID()))
			}
			Expect(spans["send "+first].SpanKind()).To(Equal(trace.SpanKindProducer))
			Expect(spans["process "+second].SpanKind()).To(Equal(trace.SpanKindConsumer))
		})
	})
}
