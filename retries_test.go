package channels_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// TestMaxRetriesConvention: NoRetries means "none" in the option and in the
// field; a field's 0 takes the plugin default; WithMaxRetries(0) is an error.
func TestMaxRetriesConvention(t *testing.T) {
	mem := func() channels.Option { return channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))) }
	for _, n := range []int{0, -2} {
		if _, err := channels.New(mem(), channels.WithMaxRetries(n)); !errors.Is(err, channels.ErrInvalidOption) {
			t.Errorf("WithMaxRetries(%d) = %v, want ErrInvalidOption", n, err)
		}
	}
	tests := []struct {
		name      string
		option    int // 0: no WithMaxRetries
		field     int
		wantCalls int32
	}{
		{"option NoRetries", channels.NoRetries, 0, 1},
		{"option 2", 2, 0, 3},
		{"default", 0, 0, 1 + broker.DefaultMaxRetries},
		{"field NoRetries over option 2", 2, channels.NoRetries, 1},
		{"field 1 over option NoRetries", channels.NoRetries, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []channels.Option{mem(), channels.WithBackoff(broker.ConstantBackoff(time.Millisecond))}
			if tt.option != 0 {
				opts = append(opts, channels.WithMaxRetries(tt.option))
			}
			p, err := channels.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			var calls, dead atomic.Int32
			s := &svc{Name: "retries", Channels: channels.Channels{
				"c": {MaxRetries: tt.field, DeadLettering: &channels.DeadLettering{Enabled: true},
					Handler: func(context.Context, *channels.Message) error { calls.Add(1); return errors.New("no") }},
				"FAILED_MESSAGES": channels.On(func(context.Context, *channels.Message) error { dead.Add(1); return nil }),
			}}
			if err := p.Register(s); err != nil {
				t.Fatal(err)
			}
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer p.Stop(context.Background())
			if err := s.SendToChannel(context.Background(), "c", 1); err != nil {
				t.Fatal(err)
			}
			eventually(t, func() bool { return dead.Load() == 1 })
			if got := calls.Load(); got != tt.wantCalls {
				t.Fatalf("handler ran %d times, want %d", got, tt.wantCalls)
			}
		})
	}
}
