// Command observability runs a small service on the in-process bus with
// OpenTelemetry metrics and traces exported to stdout: a chain of two
// channels (order.created forwards to order.charged), one retry and one
// dead letter, then the metrics an operator would see and the spans of the
// chain.
//
//	go run ./examples/observability              # summary + spans + metrics (JSON)
//	go run ./examples/observability -json=false  # summary only
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/microchannels/channels"
	_ "github.com/microchannels/channels/memory"
)

type order struct {
	ID int `json:"id"`
}

type shop struct {
	Name          string
	Channels      channels.Channels
	SendToChannel channels.SendFunc
}

func main() {
	adapter := flag.String("adapter", "memory://observability", "adapter URL")
	asJSON := flag.Bool("json", true, "also print the spans and metrics as the stdout exporters write them")
	flag.Parse()
	if err := run(*adapter, *asJSON, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(adapter string, asJSON bool, out io.Writer) error {
	ctx := context.Background()
	out = &lockedWriter{w: out} // the exporter and the observer write from handler goroutines
	jsonOut := io.Discard
	if asJSON {
		jsonOut = out
	}
	spans, err := stdouttrace.New(stdouttrace.WithWriter(jsonOut), stdouttrace.WithoutTimestamps())
	if err != nil {
		return err
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	done := make(chan struct{})
	var charged atomic.Int32
	var failedOnce atomic.Bool
	s := &shop{Name: "shop"}
	s.Channels = channels.Channels{
		"order.created": {MaxRetries: 2, Backoff: channels.ConstantBackoff(10 * time.Millisecond),
			Handler: channels.Typed(func(ctx context.Context, o order, m *channels.Message) error {
				if o.ID == 2 && failedOnce.CompareAndSwap(false, true) {
					return errors.New("gateway timeout") // retried once
				}
				if o.ID == 3 {
					return channels.Permanent(errors.New("card declined")) // dead-lettered
				}
				return s.SendToChannel(ctx, "order.charged", o) // a child span of this run
			})},
		"order.charged": channels.On(func(ctx context.Context, m *channels.Message) error {
			if charged.Add(1) == 2 {
				close(done)
			}
			return nil
		}),
	}
	p, err := channels.New(channels.WithAdapter(adapter), channels.WithMeterProvider(mp), channels.WithTracerProvider(tp),
		channels.WithDeadLettering(channels.DeadLettering{Enabled: true}),
		channels.WithObserver(func(_ context.Context, e channels.Event) {
			fmt.Fprintf(out, "outcome: %-13s %-9s attempt %d\n", e.Channel.Name, e.Outcome.Action, e.Msg.Attempt)
		}))
	if err != nil {
		return err
	}
	if err := p.Register(s); err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	for id := 1; id <= 3; id++ {
		if err := p.SendToChannel(ctx, "order.created", order{ID: id}); err != nil {
			return err
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return errors.New("the orders were not charged in time")
	}
	if err := p.Stop(ctx); err != nil {
		return err
	}

	fmt.Fprintln(out, "\nspans of the first order (parent first):")
	printChain(out, rec.Ended())

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nmetrics (what an operator sees):")
	printSummary(out, rm)
	if asJSON {
		exp, err := stdoutmetric.New(stdoutmetric.WithWriter(out), stdoutmetric.WithoutTimestamps())
		if err != nil {
			return err
		}
		if err := exp.Export(ctx, &rm); err != nil {
			return err
		}
	}
	return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
}

// printSummary prints one line per counter and channel.
func printSummary(out io.Writer, rm metricdata.ResourceMetrics) {
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("  %-34s %-14s %d", m.Name, channel(dp.Attributes), dp.Value))
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					lines = append(lines, fmt.Sprintf("  %-34s %-14s %d runs, %.3f ms in all", m.Name, channel(dp.Attributes),
						dp.Count, dp.Sum*1000))
				}
			}
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
}

// printChain prints the spans of the trace of the first send, each with
// its parent.
func printChain(out io.Writer, spans []sdktrace.ReadOnlySpan) {
	if len(spans) == 0 {
		return
	}
	byID := map[string]sdktrace.ReadOnlySpan{}
	first := spans[0]
	for _, sp := range spans {
		byID[sp.SpanContext().SpanID().String()] = sp
		if sp.StartTime().Before(first.StartTime()) {
			first = sp
		}
	}
	trace := first.SpanContext().TraceID()
	var chain []sdktrace.ReadOnlySpan
	for _, sp := range spans {
		if sp.SpanContext().TraceID() == trace {
			chain = append(chain, sp)
		}
	}
	sort.Slice(chain, func(i, j int) bool { return chain[i].StartTime().Before(chain[j].StartTime()) })
	for _, sp := range chain {
		parent := "(root)"
		if p, ok := byID[sp.Parent().SpanID().String()]; ok {
			parent = p.Name()
		}
		fmt.Fprintf(out, "  %-22s kind=%-8s parent=%s\n", sp.Name(), sp.SpanKind(), parent)
	}
}

func channel(s attribute.Set) string {
	v, _ := s.Value("channel")
	return v.AsString()
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
