package memory

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

func init() {
	broker.Register("Memory", []string{"memory", "mem"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			return New(), nil
		}
		name := u.Host + strings.TrimPrefix(u.Path, "/")
		return New(WithBus(NamedBus(name))), nil
	})
}

// Option configures an Adapter.
type Option func(*Adapter)

// WithBus makes the adapter use bus instead of the process-wide default bus.
func WithBus(b *Bus) Option { return func(a *Adapter) { a.bus = b } }

// Adapter connects a plugin to a Bus.
type Adapter struct {
	bus   *Bus
	state kit.ConnState
	env   broker.Env
	subs  kit.Subscriptions
}

var _ broker.Adapter = (*Adapter)(nil)

// New returns an adapter on the default bus (or the one given by WithBus).
func New(opts ...Option) *Adapter {
	a := &Adapter{}
	for _, o := range opts {
		o(a)
	}
	if a.bus == nil {
		a.bus = NamedBus("")
	}
	return a
}

// Bus returns the bus the adapter is on.
func (a *Adapter) Bus() *Bus { return a.bus }

// Name returns "Memory".
func (a *Adapter) Name() string { return "Memory" }

// Connect marks the adapter usable. It may be called again after Close.
func (a *Adapter) Connect(_ context.Context, env broker.Env) error {
	a.env = env.Normalize()
	a.state.SetConnected()
	return nil
}

// Publish delivers a copy to every group of the channel.
func (a *Adapter) Publish(ctx context.Context, channel string, msg *broker.Outgoing) error {
	if err := a.state.Check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return &broker.PublishError{Channel: channel, Err: err}
	}
	if err := kit.CheckOptions("memory", msg.Options.AdapterOptions, noOptions); err != nil {
		return err
	}
	if _, err := a.bus.publish(channel, msg.Payload, msg.Headers, time.Now()); err != nil {
		return &broker.PublishError{Channel: channel, Err: err}
	}
	return nil
}

var _ broker.BatchPublisher = (*Adapter)(nil)

var _ broker.InstantPublisher = (*Adapter)(nil)

// PublishesInstantly marks Publish as never waiting on I/O (see
// broker.InstantPublisher): sends to the bus get no default deadline.
func (a *Adapter) PublishesInstantly() {}

// PublishBatch delivers the messages in one pass over the bus: each group
// of the channel receives them in order, under one lock. A message with a
// send option fails on its own; on a channel with no group, the messages
// beyond DefaultRetainLimit fail with ErrRetainLimit.
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	if err := a.state.Check(); err != nil {
		return kit.FailBatch(len(msgs), err)
	}
	if err := ctx.Err(); err != nil {
		return kit.FailBatch(len(msgs), &broker.PublishError{Channel: channel, Err: err})
	}
	errs := make([]error, len(msgs))
	out := make([]busMsg, 0, len(msgs))
	at := make([]int, 0, len(msgs))
	for i, m := range msgs {
		if err := kit.CheckOptions("memory", m.Options.AdapterOptions, noOptions); err != nil {
			errs[i] = err
			continue
		}
		out = append(out, busMsg{payload: m.Payload, headers: m.Headers})
		at = append(at, i)
	}
	for j, err := range a.bus.publishBatch(channel, out, time.Now()) {
		if err != nil {
			errs[at[j]] = &broker.PublishError{Channel: channel, Err: err}
		}
	}
	return broker.BatchErrors(errs)
}

// Subscribe creates the group if needed and returns a stopped subscription.
func (a *Adapter) Subscribe(_ context.Context, ch *broker.Channel) (broker.Subscription, error) {
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	if err := prepare(ch); err != nil {
		return nil, err
	}
	g, err := a.bus.groupFor(ch.Name, ch.Group, ch.Start, ch.Now())
	if err != nil {
		return nil, err
	}
	s := &subscription{Consumer: kit.NewConsumer(ch), a: a, g: g}
	a.subs.Add(s)
	return s, nil
}

// prepare validates ch.
func prepare(ch *broker.Channel) error {
	ch.Normalize()
	if err := ch.Validate(); err != nil {
		return err
	}
	if err := kit.CheckOptions("memory", ch.AdapterOptions, noOptions); err != nil {
		return fmt.Errorf("channel %q: %w", ch.Name, err)
	}
	return nil
}

// CheckChannel validates a channel declaration (broker.ChannelChecker).
func (a *Adapter) CheckChannel(ch *broker.Channel) error {
	c := *ch
	return prepare(&c)
}

// Close drains every subscription still running, bounded by ctx.
func (a *Adapter) Close(ctx context.Context) error {
	a.state.SetClosed()
	return a.subs.DrainAll(ctx)
}

// noOptions: the bus has no typed options of its own.
func noOptions(any) bool { return false }

// subscription is the kit's delivery skeleton fed by one group of the bus.
type subscription struct {
	*kit.Consumer
	a *Adapter
	g *group
}

func (s *subscription) Start() { s.Consumer.Start(s.loop) }

func (s *subscription) loop() {
	for {
		if !s.Acquire() {
			return
		}
		e := s.g.pop(s.Stopping())
		if e == nil {
			s.ReleaseSlot()
			return
		}
		if s.IsStopping() {
			// Stopped while waiting: give the entry back untouched.
			s.g.requeue(e)
			s.ReleaseSlot()
			return
		}
		s.Run(&s.delivery(e).Delivery, nil)
	}
}

// Drain stops the loop, waits for running handlers (bounded by ctx) and
// forgets the subscription.
func (s *subscription) Drain(ctx context.Context) error {
	return s.Consumer.Drain(ctx, kit.DrainHooks{Finish: func(context.Context, bool) error {
		s.a.subs.Remove(s)
		return nil
	}})
}

// delivery is one entry handed to the kit: the kit's delivery, its message
// and the settler in one allocation.
type delivery struct {
	kit.Delivery
	msg broker.Message
	s   *subscription
	e   *entry
}

func (s *subscription) delivery(e *entry) *delivery {
	d := &delivery{s: s, e: e}
	m := &d.msg
	m.SetSerializer(s.Channel().Serializer)
	m.Channel, m.Group, m.ID = s.Channel().Name, s.Channel().Group, e.id
	m.Payload, m.Attempt, m.Timestamp, m.Raw = e.payload, e.attempt, e.ts, e
	if len(e.headers) > 0 {
		m.Headers = broker.CloneHeaders(e.headers, 0)
	}
	d.Delivery = kit.Delivery{Msg: m, Final: e.final != nil, Failure: e.final, Settle: d}
	return d
}

func (t *delivery) Ack(context.Context) error { t.s.g.settle(); return nil }

func (t *delivery) Retry(_ context.Context, delay time.Duration, _ map[string]string) error {
	next := *t.e
	next.attempt++
	t.s.g.retryAfter(&next, delay)
	return nil
}

func (t *delivery) DeadLetter(_ context.Context, payload []byte, headers map[string]string) error {
	_, err := t.s.a.bus.publish(t.s.Channel().DeadLetter.Queue, payload, headers, time.Now())
	return err
}

// keepRetryDelay is how long a message whose dead-letter copy was refused
// waits before it is dead-lettered again.
const keepRetryDelay = time.Second

func (t *delivery) Keep(_ context.Context, failure map[string]string) error {
	next := *t.e
	next.final = failure
	t.s.g.retryAfter(&next, keepRetryDelay)
	return nil
}

func (t *delivery) Release(context.Context) error { t.s.g.requeue(t.e); return nil }

var _ broker.LagReporter = (*Adapter)(nil)

// Lag reports the messages waiting for the group (ready or scheduled for a
// retry) and those delivered and not settled.
func (a *Adapter) Lag(_ context.Context, channel, group string) (broker.GroupLag, error) {
	st, ok := a.bus.Stats(channel, group)
	if !ok {
		return broker.GroupLag{}, fmt.Errorf("channels/memory: group %q not found on %q", group, channel)
	}
	return broker.GroupLag{Lag: int64(st.Ready + st.Scheduled), Pending: int64(st.Pending)}, nil
}

var _ broker.ChannelRemover = (*Adapter)(nil)

// RemoveChannel forgets the channel, its groups and their pending retries.
func (a *Adapter) RemoveChannel(_ context.Context, channel string) error {
	a.bus.remove(channel)
	return nil
}
