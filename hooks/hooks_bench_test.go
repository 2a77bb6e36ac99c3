package hooks_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

// BenchmarkInterceptor measures what a chain of LocalChannel interceptors
// adds to one delivery, around a handler that does nothing. Logging writes
// to a text handler at Info level, so the success line (Debug) is filtered:
// logging configured but off, as in production.
func BenchmarkInterceptor(b *testing.B) {
	off := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	info := hooks.Info{Service: "bench", Key: "orders", Channel: "orders", Group: "bench", Adapter: "Memory", MaxInFlight: 1}
	handler := func(context.Context, *broker.Message) error { return nil }
	for _, c := range []struct {
		name string
		ics  []hooks.Interceptor
	}{
		{"0", nil},
		{"1_Recover", []hooks.Interceptor{hooks.Recover()}},
		{"1_LoggingOff", []hooks.Interceptor{hooks.Logging(off)}},
		{"1_Timeout", []hooks.Interceptor{hooks.Timeout(time.Minute)}},
		{"3_Recover_LoggingOff_Timeout", []hooks.Interceptor{hooks.Recover(), hooks.Logging(off), hooks.Timeout(time.Minute)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := hooks.ChainHandler(handler, info, c.ics)
			ctx := context.Background()
			msg := &broker.Message{Channel: "orders", Group: "bench", ID: "1-0", Payload: []byte(`{"id":1}`), Attempt: 1}
			b.ReportAllocs()
			for b.Loop() {
				if err := h(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
