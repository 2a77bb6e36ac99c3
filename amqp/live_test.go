package amqp

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestCloseConsumingAfterDialOpened: closeConsuming that finds the
// consuming session still pending although its dial already opened the
// connection (the dial ended between closeConsuming reading the pending
// session and closing it) closes that connection; nothing else would, as
// the Subscribe that dialed it sees the live closed and returns ErrClosed.
func TestCloseConsumingAfterDialOpened(t *testing.T) {
	brokerenv.Need(t, "amqp", brokerenv.PingAMQP)
	a := &Adapter{urls: []string{brokerenv.AMQPURL()}}
	s := newSession(a, slog.New(slog.DiscardHandler), "channels-consume-test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.start(ctx); err != nil {
		t.Fatal(err)
	}
	c := s.current()
	if c == nil {
		t.Fatal("no connection after start")
	}
	t.Cleanup(func() { _ = c.Close() })
	// The state while the Subscribe that dialed has not yet taken the lock
	// back: its session is still the pending one.
	l := &live{pendingCons: s, dialing: make(chan struct{})}
	if err := l.closeConsuming(ctx); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Eventually(c.IsClosed).WithTimeout(5*time.Second).WithPolling(10*time.Millisecond).
		Should(gomega.BeTrue(), "the consuming connection stayed open after closeConsuming")
}
