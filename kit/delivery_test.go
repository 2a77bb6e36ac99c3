package kit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

// settled records what Channel.Deliver asked of an adapter.
type settled struct {
	mu      sync.Mutex
	calls   []string
	delay   time.Duration
	failure map[string]string
	dlq     map[string]string
	dlqErr  error
}

func (s *settled) add(c string)              { s.mu.Lock(); s.calls = append(s.calls, c); s.mu.Unlock() }
func (s *settled) Ack(context.Context) error { s.add("ack"); return nil }
func (s *settled) Retry(_ context.Context, d time.Duration, f map[string]string) error {
	s.add("retry")
	s.delay, s.failure = d, f
	return nil
}
func (s *settled) DeadLetter(_ context.Context, _ []byte, h map[string]string) error {
	s.add("dead-letter")
	s.dlq = h
	return s.dlqErr
}
func (s *settled) Keep(_ context.Context, f map[string]string) error {
	s.add("keep")
	s.failure = f
	return nil
}
func (s *settled) Release(context.Context) error { s.add("release"); return nil }
func (s *settled) got() string                   { s.mu.Lock(); defer s.mu.Unlock(); return strings.Join(s.calls, ",") }

func TestDeliverAttemptRule(t *testing.T) {
	boom := errors.New("boom")
	kept := broker.ErrorToHeaders(errors.New("kept failure"), time.Now())
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		err        error
		attempt    int
		deliveries int
		final      bool
		decodeErr  error
		dl         bool
		dlqErr     error
		maxDeliv   int
		wantRun    bool
		want       string
		wantAction broker.Action
	}{
		{name: "success acks", attempt: 1, wantRun: true, want: "ack", wantAction: broker.Ack},
		{name: "failure with retries left", err: boom, attempt: 1, wantRun: true, want: "retry", wantAction: broker.Retry},
		{name: "last attempt dead-letters then acks", err: boom, attempt: 3, dl: true, wantRun: true, want: "dead-letter,ack", wantAction: broker.DeadLetter},
		{name: "last attempt without dead-lettering drops", err: boom, attempt: 3, wantRun: true, want: "ack", wantAction: broker.Drop},
		{name: "failed dead-letter publish keeps", err: boom, attempt: 3, dl: true, dlqErr: context.DeadlineExceeded, wantRun: true, want: "dead-letter,keep", wantAction: broker.DeadLetter},
		{name: "refused dead letter is tried with the library's headers, then kept", err: boom, attempt: 3, dl: true, dlqErr: errors.New("refused"), wantRun: true, want: "dead-letter,dead-letter,keep", wantAction: broker.DeadLetter},
		{name: "permanent skips retries", err: broker.Permanent(boom), attempt: 1, dl: true, wantRun: true, want: "dead-letter,ack", wantAction: broker.DeadLetter},
		{name: "kept final failure is dead-lettered unrun", attempt: 1, final: true, dl: true, want: "dead-letter,ack", wantAction: broker.DeadLetter},
		{name: "undecodable envelope is poison", attempt: 1, decodeErr: errors.New("bad"), dl: true, want: "dead-letter,ack", wantAction: broker.DeadLetter},
		{name: "over the attempt limit is given up unrun", attempt: 4, dl: true, want: "dead-letter,ack", wantAction: broker.DeadLetter},
		{name: "deliveries within the default limit run", attempt: 1, deliveries: 8, wantRun: true, want: "ack", wantAction: broker.Ack},
		{name: "deliveries over the default limit give up unrun", attempt: 1, deliveries: 9, dl: true, want: "dead-letter,ack", wantAction: broker.DeadLetter},
		{name: "deliveries over MaxDeliveries give up unrun", attempt: 1, deliveries: 4, maxDeliv: 3, want: "ack", wantAction: broker.Drop},
		{name: "a run cut by our stop is released, even the last", ctx: cancelled, err: context.Canceled, attempt: 3, dl: true, wantRun: true, want: "release", wantAction: broker.Release},
		{name: "a run that succeeds despite the stop acks", ctx: cancelled, attempt: 1, wantRun: true, want: "ack", wantAction: broker.Ack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ran := false
			ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1,
				Retry:      broker.RetryPolicy{MaxRetries: 2, Backoff: broker.ConstantBackoff(time.Second), MaxDeliveries: tc.maxDeliv},
				DeadLetter: broker.DeadLetterPolicy{Enabled: tc.dl, Queue: "DLQ"},
				Handler:    func(context.Context, *broker.Message) error { ran = true; return tc.err }}
			ch.Normalize()
			if err := ch.Validate(); err != nil {
				t.Fatal(err)
			}
			s := &settled{dlqErr: tc.dlqErr}
			msg := broker.NewMessage(nil)
			msg.Channel, msg.Group, msg.ID, msg.Attempt = "c", "g", "1-0", tc.attempt
			d := &kit.Delivery{Msg: msg, Deliveries: tc.deliveries, Final: tc.final, DecodeErr: tc.decodeErr,
				DecodeField: "headers", Settle: s}
			if tc.final {
				d.Failure = kept
			}
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			out := kit.Deliver(ctx, ch, d)
			if ran != tc.wantRun || s.got() != tc.want || out.Action != tc.wantAction {
				t.Fatalf("ran %v settled %q action %v; want ran %v settled %q action %v", ran, s.got(), out.Action,
					tc.wantRun, tc.want, tc.wantAction)
			}
			switch {
			case tc.want == "retry":
				if s.delay != time.Second || s.failure[broker.HeaderErrorMessage] != "boom" {
					t.Fatalf("retry delay %v failure %v", s.delay, s.failure)
				}
			case tc.final:
				if s.dlq[broker.HeaderErrorMessage] != "kept failure" {
					t.Fatalf("dead letter of a kept failure has %v", s.dlq)
				}
			case tc.dlqErr != nil:
				if s.failure[broker.HeaderErrorMessage] != "boom" {
					t.Fatalf("kept failure %v", s.failure)
				}
			case tc.deliveries >= 9:
				if !strings.Contains(s.dlq[broker.HeaderErrorMessage], "exceeded its deliveries") {
					t.Fatalf("poison pill dead letter %v", s.dlq)
				}
			}
		})
	}
}

func TestMaxDeliveriesValidation(t *testing.T) {
	for _, tc := range []struct {
		retries, deliveries int
		ok                  bool
	}{{3, 0, true}, {3, 4, true}, {3, 3, false}, {0, -1, false}, {0, 1, true}} {
		err := broker.RetryPolicy{MaxRetries: tc.retries, Backoff: broker.DefaultBackoff, MaxDeliveries: tc.deliveries}.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, broker.ErrInvalidOption)) {
			t.Errorf("MaxRetries %d MaxDeliveries %d: %v", tc.retries, tc.deliveries, err)
		}
	}
}

func TestConsumerDrainNamesWhatStillRuns(t *testing.T) {
	release := make(chan struct{})
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 2,
		Handler: func(ctx context.Context, _ *broker.Message) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
	ch.Normalize()
	c := kit.NewConsumer(ch)
	settledCh := make(chan broker.Outcome, 2)
	if !c.Start() || c.Start() {
		t.Fatal("Start must run once")
	}
	for _, id := range []string{"b", "a"} {
		if !c.Acquire() {
			t.Fatal("no slot")
		}
		m := broker.NewMessage(nil)
		m.ID, m.Attempt = id, 1
		c.Run(&kit.Delivery{Msg: m, Settle: &settled{}}, func(o broker.Outcome) { settledCh <- o })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	finished := false
	err := c.Drain(ctx, kit.DrainHooks{Finish: func(_ context.Context, timedOut bool) error { finished = timedOut; return nil }})
	var de *broker.DrainError
	if !errors.As(err, &de) || !errors.Is(err, broker.ErrDrainTimeout) || strings.Join(de.Running, ",") != "a,b" || !finished {
		t.Fatalf("drain: %v (finish saw timeout: %v)", err, finished)
	}
	for range 2 {
		select {
		case o := <-settledCh:
			if o.Action != broker.Release {
				t.Fatalf("a cut handler's message was %v, want release", o.Action)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("cut handlers did not settle")
		}
	}
	if c.Drain(context.Background(), kit.DrainHooks{}) != err {
		t.Fatal("Drain must return its first result")
	}
	if c.Acquire() {
		t.Fatal("Acquire after Drain")
	}
}

func TestSubscriptionsDrainAll(t *testing.T) {
	var set kit.Subscriptions
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error { return nil }}
	ch.Normalize()
	subs := []*testSub{{c: kit.NewConsumer(ch), set: &set}, {c: kit.NewConsumer(ch), set: &set}}
	for _, s := range subs {
		set.Add(s)
		s.Start()
	}
	if err := set.DrainAll(context.Background()); err != nil || set.Len() != 0 {
		t.Fatalf("DrainAll: %v, %d left", err, set.Len())
	}
}

type testSub struct {
	c   *kit.Consumer
	set *kit.Subscriptions
}

func (s *testSub) Start() { s.c.Start(func() { <-s.c.Stopping() }) }
func (s *testSub) Drain(ctx context.Context) error {
	return s.c.Drain(ctx, kit.DrainHooks{Finish: func(context.Context, bool) error { s.set.Remove(s); return nil }})
}

func TestReconnectBacksOff(t *testing.T) {
	r := kit.Reconnect{Backoff: broker.ExponentialBackoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, Multiplier: 2}}
	var got []time.Duration
	for range 4 {
		d, ok := r.Failed(nil)
		if !ok {
			t.Fatal("stopped")
		}
		got = append(got, d)
	}
	if got[0] != time.Millisecond || got[1] != 2*time.Millisecond || got[3] != 4*time.Millisecond {
		t.Fatalf("delays %v", got)
	}
	r.Succeeded()
	if r.Next() != time.Millisecond {
		t.Fatalf("after success next is %v", r.Next())
	}
	stop := make(chan struct{})
	close(stop)
	if _, ok := (&kit.Reconnect{Backoff: broker.ConstantBackoff(time.Hour)}).Failed(stop); ok {
		t.Fatal("Failed must return at once when stopping")
	}
}

func TestFetchYieldsToWaitingRedeliveries(t *testing.T) {
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error { return nil }}
	ch.Normalize()
	c := kit.NewConsumer(ch)
	c.WantSlots()
	fetched := make(chan bool, 1)
	go func() { fetched <- c.AcquireForFetch(context.Background()) }()
	select {
	case <-fetched:
		t.Fatal("a fetch took the free slot while a redelivery wanted it")
	case <-time.After(50 * time.Millisecond):
	}
	if !c.TryAcquire() {
		t.Fatal("the redelivery did not get the free slot")
	}
	c.SlotsGranted()
	c.ReleaseSlot()
	select {
	case ok := <-fetched:
		if !ok {
			t.Fatal("fetch refused")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("fetch did not resume after SlotsGranted")
	}
	c.ReleaseSlot()
	c.WantSlots()
	go func() { fetched <- c.AcquireForFetch(context.Background()) }()
	if err := c.Drain(context.Background(), kit.DrainHooks{}); err != nil {
		t.Fatal(err)
	}
	if <-fetched {
		t.Fatal("fetch acquired during a drain")
	}
}

func TestObserverSeesEachOutcome(t *testing.T) {
	var events []broker.Event
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1,
		Retry:      broker.RetryPolicy{MaxRetries: 1, Backoff: broker.ConstantBackoff(time.Second)},
		DeadLetter: broker.DeadLetterPolicy{Enabled: true, Queue: "DLQ"},
		Handler:    func(context.Context, *broker.Message) error { return errors.New("boom") },
		Observer:   func(_ context.Context, e broker.Event) { events = append(events, e) }}
	ch.Normalize()
	for attempt, dlqErr := range []error{nil, nil, errors.New("down")} {
		msg := broker.NewMessage(nil)
		msg.ID, msg.Attempt = "1", min(attempt+1, 2)
		kit.Deliver(context.Background(), ch, &kit.Delivery{Msg: msg, Deliveries: 3, Settle: &settled{dlqErr: dlqErr}})
	}
	want := []broker.Action{broker.Retry, broker.DeadLetter, broker.DeadLetter}
	for i, e := range events {
		if e.Outcome.Action != want[i] || !e.Ran || e.Deliveries != 3 || e.Outcome.Err == nil {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	if len(events) != 3 || events[1].SettleErr != nil || events[2].SettleErr == nil ||
		!strings.Contains(events[2].SettleErr.Error(), "down") {
		t.Fatalf("events %+v", events)
	}
}

// noopSettler acknowledges without recording anything.
type noopSettler struct{}

func (noopSettler) Ack(context.Context) error                                     { return nil }
func (noopSettler) Retry(context.Context, time.Duration, map[string]string) error { return nil }
func (noopSettler) DeadLetter(context.Context, []byte, map[string]string) error   { return nil }
func (noopSettler) Keep(context.Context, map[string]string) error                 { return nil }
func (noopSettler) Release(context.Context) error                                 { return nil }

// The allocation budget of the kit's share of a delivery that succeeds:
// one allocation in Deliver (the run's context, which ends when the
// handler returns; admit, decide and ack allocate nothing), one in Run
// (the delivery's goroutine).
func TestDeliveryAllocations(t *testing.T) {
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1,
		Handler: func(context.Context, *broker.Message) error { return nil }}
	ch.Normalize()
	d := &kit.Delivery{Msg: &broker.Message{Channel: "c", Group: "g", ID: "1", Attempt: 1}, Settle: noopSettler{}}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { kit.Deliver(ctx, ch, d) }); n != 1 {
		t.Errorf("Deliver allocates %v times per acked delivery, want 1", n)
	}

	c := kit.NewConsumer(ch)
	defer c.Drain(ctx, kit.DrainHooks{})
	done := make(chan broker.Outcome, 1)
	settled := func(o broker.Outcome) { done <- o }
	if n := testing.AllocsPerRun(100, func() {
		if !c.Acquire() {
			t.Fatal("no slot")
		}
		c.Run(d, settled)
		<-done
	}); n > 1 {
		t.Errorf("Run allocates %v times per acked delivery, want at most 1", n)
	}
}
