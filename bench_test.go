package channels_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/memory"
)

// The dispatch benchmarks run on the memory bus with the default options (no
// interceptors, metrics, tracing or observers) and a handler that does nothing:
//
//   - BenchmarkDispatch: one op is one message sent with SendToChannel and
//     handled: the send side and the receive side together.
//   - BenchmarkDispatchSend: the send side alone (serialize, headers,
//     publish onto the bus), nothing consuming.
//   - BenchmarkDispatchReceive: the receive side alone, the per-message
//     dispatch path: messages already on the bus are fetched, wrapped in the
//     handler context, handled and acknowledged. The Metrics case adds an
//     OpenTelemetry SDK meter provider (a manual reader, never collected).

const benchChannel = "bench.topic"

var mifNames = map[int]string{1: "MaxInFlight1", 16: "MaxInFlight16"}

// benchPlugin returns a plugin on a fresh bus whose one channel runs handle.
func benchPlugin(b *testing.B, mif int, handle func(), opts ...channels.Option) (*channels.Plugin, *svc, *memory.Adapter) {
	b.Helper()
	s := &svc{Name: "bench", Channels: channels.Channels{benchChannel: {MaxInFlight: mif,
		Handler: func(context.Context, *channels.Message) error {
			handle()
			return nil
		}}}}
	a := memory.New(memory.WithBus(memory.NewBus()))
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(a)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Register(s); err != nil {
		b.Fatal(err)
	}
	return p, s, a
}

func BenchmarkDispatch(b *testing.B) {
	for _, mif := range []int{1, 16} {
		b.Run(mifNames[mif], func(b *testing.B) {
			var handled atomic.Int64
			done := make(chan struct{}, 1)
			target := int64(b.N)
			p, s, _ := benchPlugin(b, mif, func() {
				if handled.Add(1) == target {
					done <- struct{}{}
				}
			})
			ctx := context.Background()
			if err := p.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer p.Stop(ctx)
			payload := Order{ID: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := s.SendToChannel(ctx, benchChannel, payload); err != nil {
					b.Fatal(err)
				}
			}
			<-done
		})
	}
}

// benchRound is how many messages a round of the send or receive benchmark
// holds on the bus at once.
const benchRound = 4096

func BenchmarkDispatchSend(b *testing.B) {
	p, s, a := benchPlugin(b, 1, func() {})
	ctx := context.Background()
	payload := Order{ID: 1}
	b.ReportAllocs()
	b.StopTimer()
	for sent := 0; sent < b.N; {
		// The group exists and nothing consumes: each send is one entry queued
		// for it. Between rounds the channel is forgotten with its entries.
		if err := p.Connect(ctx); err != nil {
			b.Fatal(err)
		}
		n := min(benchRound, b.N-sent)
		b.StartTimer()
		for range n {
			if err := s.SendToChannel(ctx, benchChannel, payload); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		sent += n
		if err := p.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		if err := a.RemoveChannel(ctx, benchChannel); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDispatchReceive(b *testing.B) {
	for _, c := range []struct {
		name string
		mif  int
		opts []channels.Option
	}{
		{"MaxInFlight1", 1, nil},
		{"MaxInFlight16", 16, nil},
		{"MaxInFlight16_Metrics", 16, []channels.Option{channels.WithMeterProvider(
			sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var handled, target atomic.Int64
			done := make(chan struct{}, 1)
			p, s, a := benchPlugin(b, c.mif, func() {
				if handled.Add(1) == target.Load() {
					done <- struct{}{}
				}
			}, c.opts...)
			ctx := context.Background()
			payload := Order{ID: 1}
			b.ReportAllocs()
			b.StopTimer()
			for got := 0; got < b.N; {
				// Connected, not consuming: the round is queued on the bus
				// untimed, then consumed timed.
				if err := p.Connect(ctx); err != nil {
					b.Fatal(err)
				}
				n := min(benchRound, b.N-got)
				target.Store(int64(got + n))
				for range n {
					if err := s.SendToChannel(ctx, benchChannel, payload); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				p.Consume()
				<-done
				waitSettled(b, a)
				b.StopTimer()
				got += n
				if err := p.Stop(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// waitSettled polls the bus until the last handled messages are acknowledged.
func waitSettled(b *testing.B, a *memory.Adapter) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, ok := a.Bus().Stats(benchChannel, "bench")
		if !ok {
			b.Fatal("bench group not found")
		}
		if st.Pending == 0 && st.Ready == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("messages not settled: %+v", st)
		}
		runtime.Gosched()
	}
}
