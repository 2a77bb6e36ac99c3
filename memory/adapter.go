package memory

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	state broker.ConnState
	env   broker.Env

	mu   sync.Mutex
	subs map[*subscription]struct{}
}

var _ broker.Adapter = (*Adapter)(nil)

// New returns an adapter on the default bus (or the one given by WithBus).
func New(opts ...Option) *Adapter {
	a := &Adapter{subs: map[*subscription]struct{}{}}
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
	a.bus.publish(channel, msg.Payload, msg.Headers, time.Now())
	return nil
}

// Subscribe creates the group if needed and returns a stopped subscription.
func (a *Adapter) Subscribe(_ context.Context, ch *broker.Channel) (broker.Subscription, error) {
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	ch.Normalize()
	if err := ch.Validate(); err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.Background())
	s := &subscription{
		a:      a,
		ch:     ch,
		g:      a.bus.groupFor(ch.Name, ch.Group),
		fl:     broker.NewInflight(ch.MaxInFlight),
		hctx:   hctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	a.mu.Lock()
	a.subs[s] = struct{}{}
	a.mu.Unlock()
	return s, nil
}

// Close drains every subscription still running, bounded by ctx.
func (a *Adapter) Close(ctx context.Context) error {
	a.state.SetClosed()
	a.mu.Lock()
	subs := make([]*subscription, 0, len(a.subs))
	for s := range a.subs {
		subs = append(subs, s)
	}
	a.mu.Unlock()
	var first error
	for _, s := range subs {
		if err := s.Drain(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

type subscription struct {
	a      *Adapter
	ch     *broker.Channel
	g      *group
	fl     *broker.Inflight
	hctx   context.Context
	cancel context.CancelFunc

	started   atomic.Bool
	done      chan struct{}
	drainOnce sync.Once
	drainErr  error
}

func (s *subscription) Start() {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	go s.loop()
}

func (s *subscription) loop() {
	defer close(s.done)
	stop := s.fl.Closing()
	for {
		if !s.fl.Acquire(s.hctx) {
			return
		}
		e := s.g.pop(stop)
		if e == nil {
			s.fl.Release()
			return
		}
		select {
		case <-stop:
			// Stopped while waiting: give the entry back untouched.
			s.g.requeue(e)
			s.fl.Release()
			return
		default:
		}
		s.fl.Go(func() { s.handle(e) })
	}
}

func (s *subscription) handle(e *entry) {
	msg := broker.NewMessage(s.ch.Serializer)
	msg.Channel, msg.Group, msg.ID = s.ch.Name, s.ch.Group, e.id
	msg.Payload, msg.Attempt, msg.Timestamp, msg.Raw = e.payload, e.attempt, e.ts, e
	if len(e.headers) > 0 {
		msg.Headers = broker.CloneHeaders(e.headers, 0)
	}
	out := s.ch.Process(s.hctx, msg)
	switch out.Action {
	case broker.Ack, broker.Drop:
		s.g.settle()
	case broker.Retry:
		next := *e
		next.attempt++
		s.g.retryAfter(&next, out.Delay)
	case broker.DeadLetter:
		s.a.bus.publish(s.ch.DeadLetter.Queue, e.payload, out.Headers, time.Now())
		s.g.settle()
	default:
		panic(fmt.Sprintf("memory: unknown outcome %v", out.Action))
	}
}

func (s *subscription) Drain(ctx context.Context) error {
	s.drainOnce.Do(func() {
		s.fl.Close()
		if s.started.Load() {
			<-s.done
		}
		// On timeout the handlers' context is cancelled; they settle their
		// message when they return.
		err := s.fl.Wait(ctx)
		s.cancel()
		s.a.mu.Lock()
		delete(s.a.subs, s)
		s.a.mu.Unlock()
		s.drainErr = err
	})
	return s.drainErr
}
