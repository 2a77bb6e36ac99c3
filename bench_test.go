package channels_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/memory"
)

// BenchmarkDispatch measures the hot path on the memory bus: SendToChannel
// (serialize, headers, publish) through delivery, the context wrapper and the
// handler, to the ack. One op is one message sent and handled.
func BenchmarkDispatch(b *testing.B) {
	for _, mif := range []int{1, 16} {
		b.Run(map[int]string{1: "MaxInFlight1", 16: "MaxInFlight16"}[mif], func(b *testing.B) {
			var handled atomic.Int64
			done := make(chan struct{}, 1)
			target := int64(b.N)
			s := &svc{Name: "bench", Channels: channels.Channels{"bench.topic": {MaxInFlight: mif,
				Handler: func(ctx context.Context, m *channels.Message) error {
					if handled.Add(1) == target {
						done <- struct{}{}
					}
					return nil
				}}}}
			p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Register(s); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := p.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer p.Stop(ctx)
			payload := Order{ID: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := s.SendToChannel(ctx, "bench.topic", payload); err != nil {
					b.Fatal(err)
				}
			}
			<-done
		})
	}
}
