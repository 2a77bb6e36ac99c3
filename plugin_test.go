package channels_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

type svc struct {
	Name                    string
	Channels                channels.Channels
	SendToChannel           channels.SendFunc
	EmitLocalChannelHandler channels.TriggerFunc
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(5 * time.Second).WithPolling(5 * time.Millisecond).Should(gomega.BeTrue())
}

func TestSendReceiveRetryDLQ(t *testing.T) {
	bus := memory.NewBus()
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))),
		channels.WithBackoff(broker.ConstantBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	var ok, bad, dlq atomic.Int32
	var dlqHeaders atomic.Pointer[map[string]string]
	s := &svc{Name: "payments", Channels: channels.Channels{
		"good": channels.On(func(ctx context.Context, m *channels.Message) error { ok.Add(1); return nil }),
		"bad": {MaxRetries: 2, DeadLettering: &channels.DeadLettering{Enabled: true},
			Handler: func(ctx context.Context, m *channels.Message) error { bad.Add(1); return errors.New("boom") }},
		"FAILED_MESSAGES": channels.On(func(ctx context.Context, m *channels.Message) error {
			h := m.Headers
			dlqHeaders.Store(&h)
			dlq.Add(1)
			return nil
		}),
	}}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := s.SendToChannel(context.Background(), "good", 1); !errors.Is(err, channels.ErrNotConnected) {
		t.Fatalf("send before start: %v", err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.SendToChannel(context.Background(), "good", map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SendToChannel(context.Background(), "bad", "x"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return ok.Load() == 1 && dlq.Load() == 1 })
	if bad.Load() != 3 {
		t.Fatalf("bad handler ran %d times, want 3", bad.Load())
	}
	h := *dlqHeaders.Load()
	if h["x-error-message"] != "boom" || h["x-original-channel"] != "bad" || h["x-redelivered-count"] != "2" {
		t.Fatalf("dlq headers: %v", h)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.SendToChannel(context.Background(), "good", 1); !errors.Is(err, channels.ErrClosed) {
		t.Fatalf("send after stop: %v", err)
	}
}
