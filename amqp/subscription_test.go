package amqp

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/onsi/gomega"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// recordingSub is a subscription on which a firing hand-back timer makes
// a call f records: its consumer channel is k's and open, the publishing
// connection is up, and the publisher is closed, so the hand-back copy
// fails at once (ErrClosed, a refusal) and the message is nacked.
func recordingSub() (*subscription, *acker, *fakeAcks) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}}
	sess := &session{log: slog.New(slog.DiscardHandler), conn: &amqp091.Connection{},
		changed: make(chan struct{}), closed: make(chan struct{}), done: make(chan struct{})}
	p := newPublisher(sess, 1)
	_ = p.close(context.Background())
	s := &subscription{a: &Adapter{}, l: &live{sess: sess, pub: p}, ch: &broker.Channel{Name: "c", Group: "g"},
		queue: "g.c", log: slog.New(slog.DiscardHandler), timers: map[*time.Timer]pendingBack{},
		ack: k, cur: &amqp091.Channel{}}
	s.qtype.Store(QueueClassic)
	return s, k, f
}

func (f *fakeAcks) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// TestHandBackTimerFires: the fixture of the timer tests records a
// hand-back that fires (the nack of a copy that failed).
func TestHandBackTimerFires(t *testing.T) {
	s, k, f := recordingSub()
	s.handBackLater(&amqp091.Delivery{DeliveryTag: 1}, k)
	gomega.NewWithT(t).Eventually(f.count).WithTimeout(DefaultSettleFailureDelay+2*time.Second).
		WithPolling(20*time.Millisecond).Should(gomega.Equal(1), "the hand-back did not fire")
}

// TestHandBackTimersStopWithDrain: a hand-back scheduled after a failed
// settle (DefaultSettleFailureDelay later) does not fire once the drain
// stopped the timers, and none is scheduled after it: the drain hands the
// pending ones back itself or the channel's close requeues them, and a
// nack after the stop would reach a closed (or another) channel.
func TestHandBackTimersStopWithDrain(t *testing.T) {
	s, k, f := recordingSub()
	s.handBackLater(&amqp091.Delivery{DeliveryTag: 1}, k)
	if backs := s.stopTimers(); len(backs) != 1 || backs[0].d.DeliveryTag != 1 {
		t.Fatalf("pending hand-backs %+v", backs)
	}
	s.handBackLater(&amqp091.Delivery{DeliveryTag: 2}, k)
	gomega.NewWithT(t).Consistently(f.count).WithTimeout(DefaultSettleFailureDelay+300*time.Millisecond).
		WithPolling(20*time.Millisecond).Should(gomega.BeZero(), "a hand-back fired after the drain")
}

// TestHandBackTimerChannelGone: a hand-back whose consumer channel is no
// longer the subscription's (closed: RabbitMQ requeued the message) fires
// once its delay passed and settles nothing.
func TestHandBackTimerChannelGone(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}}
	s := &subscription{timers: map[*time.Timer]pendingBack{}}
	s.handBackLater(&amqp091.Delivery{DeliveryTag: 1}, k)
	pendingTimers := func() int {
		s.tmu.Lock()
		defer s.tmu.Unlock()
		return len(s.timers)
	}
	gomega.NewWithT(t).Eventually(pendingTimers).WithTimeout(DefaultSettleFailureDelay+2*time.Second).
		WithPolling(20*time.Millisecond).Should(gomega.BeZero(), "the hand-back fired")
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 0 {
		t.Fatalf("settled on a channel that is gone: %+v", f.calls)
	}
}

// TestIsConsumerTimeout recognises the channel close of RabbitMQ's
// consumer_timeout.
func TestIsConsumerTimeout(t *testing.T) {
	for _, tt := range []struct {
		e    *amqp091.Error
		want bool
	}{
		{&amqp091.Error{Code: amqp091.PreconditionFailed, Reason: "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. This timeout value can be configured, see consumers doc guide to learn more"}, true},
		{&amqp091.Error{Code: amqp091.PreconditionFailed, Reason: "PRECONDITION_FAILED - unknown delivery tag 3"}, false},
		{&amqp091.Error{Code: amqp091.NotFound, Reason: "NOT_FOUND - no queue"}, false},
		{nil, false},
	} {
		if got := isConsumerTimeout(tt.e); got != tt.want {
			t.Errorf("%v: %v", tt.e, got)
		}
	}
}

// TestBlockedConnection: while RabbitMQ blocks the publishing connection
// (connection.blocked: a memory or disk alarm), a send waits for
// connection.unblocked, bounded by its context, and fails with the alarm's
// reason instead of hanging in a write RabbitMQ does not read.
func TestBlockedConnection(t *testing.T) {
	s := &session{log: slog.New(slog.DiscardHandler), closed: make(chan struct{})}
	if err := s.waitUnblocked(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.setBlocked(true, "low on memory")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	err := s.waitUnblocked(ctx)
	cancel()
	if !errors.Is(err, errBlocked) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "low on memory") {
		t.Fatalf("blocked: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("waited %v", took)
	}
	done := make(chan error, 1)
	go func() { done <- s.waitUnblocked(context.Background()) }()
	s.setBlocked(false, "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not released by connection.unblocked")
	}
}

// TestFinishWaitsForHandBacks: the drain's Finish (driven by Drain)
// admits no hand-back once it began, and waits for the ones admitted
// before (bounded by its context) before it flushes the acks and closes
// the channel: the ack of a hand-back that ends while Finish waits goes
// out, and Drain returns only after it.
func TestFinishWaitsForHandBacks(t *testing.T) {
	g := gomega.NewWithT(t)
	f := &fakeAcks{}
	k := newAcker(f, 16, 0, 0)
	k.delivered(1)
	s := &subscription{Consumer: kit.NewConsumer(&broker.Channel{Name: "c", Group: "g", MaxInFlight: 1}),
		a: &Adapter{}, l: &live{}, timers: map[*time.Timer]pendingBack{}, ack: k}
	if !s.enter() {
		t.Fatal("a hand-back refused before Finish")
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	finishing := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.finishing
	}
	g.Eventually(finishing).WithTimeout(5*time.Second).WithPolling(5*time.Millisecond).Should(gomega.BeTrue(),
		"Finish did not begin")
	if s.enter() {
		t.Fatal("a hand-back admitted after Finish began")
	}
	isDone := func() bool {
		select {
		case err := <-drained:
			if err != nil {
				t.Errorf("drain: %v", err)
			}
			return true
		default:
			return false
		}
	}
	g.Consistently(isDone).WithTimeout(200*time.Millisecond).WithPolling(10*time.Millisecond).Should(gomega.BeFalse(),
		"Finish went on while a hand-back was under way")
	// The hand-back ends: its ack is queued, then it leaves.
	if err := k.ack(1); err != nil {
		t.Fatal(err)
	}
	s.leave()
	g.Eventually(isDone).WithTimeout(5*time.Second).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(),
		"Finish did not go on after the hand-back")
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 1 || f.calls[0].tag != 1 || f.calls[0].nack {
		t.Fatalf("acks sent %+v, want the hand-back's ack of tag 1", f.calls)
	}
}
