package channels_test

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/microchannels/channels"
)

// TestSpanNamesUseFullName: with a namespace, the producer and the consumer
// span name the same destination, the channel's full name as the broker
// sees it ("send ns.c", "process ns.c"), and so do the sent and received
// counters' channel attribute, for a single send and a batch.
func TestSpanNamesUseFullName(t *testing.T) {
	g := gomega.NewWithT(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	p, in := batchPlugin(t, nil, channels.WithNamespace("ns"), channels.WithMeterProvider(mp), channels.WithTracerProvider(tp))
	g.Expect(p.SendToChannel(context.Background(), "c", 1)).To(gomega.Succeed())
	g.Expect(p.SendBatch(context.Background(), "c", seq(2))).To(gomega.Succeed())
	g.Eventually(in.count).Should(gomega.Equal(3))

	names := map[string]int{}
	g.Eventually(func() map[string]int {
		clear(names)
		for _, s := range spans.Ended() {
			names[s.Name()]++
			set := attribute.NewSet(s.Attributes()...)
			if v, ok := set.Value("messaging.destination.name"); ok {
				g.Expect(v.AsString()).To(gomega.Equal("ns.c"), s.Name())
			}
		}
		return names
	}).Should(gomega.Equal(map[string]int{"send ns.c": 3, "process ns.c": 3}))

	var rm metricdata.ResourceMetrics
	g.Expect(reader.Collect(context.Background(), &rm)).To(gomega.Succeed())
	byChannel := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			d, ok := m.Data.(metricdata.Sum[int64])
			if !ok || (m.Name != channels.MetricSent && m.Name != channels.MetricReceived) {
				continue
			}
			for _, dp := range d.DataPoints {
				ch, _ := dp.Attributes.Value("channel")
				if byChannel[m.Name] == nil {
					byChannel[m.Name] = map[string]int64{}
				}
				byChannel[m.Name][ch.AsString()] += dp.Value
			}
		}
	}
	g.Expect(byChannel).To(gomega.Equal(map[string]map[string]int64{
		channels.MetricSent: {"ns.c": 3}, channels.MetricReceived: {"ns.c": 3}}))
}
