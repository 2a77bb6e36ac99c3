package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"errors"
	"sort"
	"sync"
	"time"
)

// DrainHooks are the broker-specific steps of a drain. Each receives the
// drain's context and must return when it ends.
type DrainHooks struct {
	// StopFetching ends blocking fetches at once (the drain has already
	// closed Stopping). Nil when the fetch loops watch Stopping themselves.
	StopFetching func(ctx context.Context)
	// Finish runs after the handlers returned or the deadline passed
	// (timedOut): flush acknowledgements, hand back what was fetched but not
	// run, remove the consumer. It also runs when the consumer never started.
	Finish func(ctx context.Context, timedOut bool) error
}

// Drain stops fetching, waits for the fetch loops and the running handlers
// (bounded by ctx), stops the beats (Beat), then runs Finish. When ctx ends first the handlers'
// context is cancelled (their messages are released and delivered again,
// never dead-lettered) and a *DrainError naming them is returned. It runs
// once; later calls return the first result.
func (c *Consumer) Drain(ctx context.Context, h DrainHooks) error {
	c.drainOnce.Do(func() {
		close(c.stop)
		c.fl.Close()
		var errs []error
		timedOut := false
		if c.started.Load() {
			if h.StopFetching != nil {
				h.StopFetching(ctx)
			}
			if !c.loops.wait(ctx) {
				timedOut = true
			}
			c.closeAhead(ctx) // what was read ahead goes back at once
			if c.fl.Wait(ctx) != nil {
				timedOut = true
			}
			if timedOut {
				errs = append(errs, c.drainError())
			}
		}
		close(c.beatStop)
		waitCtx(ctx, &c.beats) // a beat under way ends within its own timeout
		c.cancel()
		if timedOut {
			// The runs cut by the deadline return now and hand their
			// messages back (Release): a moment for them to do so before
			// Finish closes what they settle on (a release that cannot
			// happen is a redelivery the broker may count).
			settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), BoundedGrace/3)
			_ = c.fl.Wait(settle)
			cancel()
		}
		if h.Finish != nil {
			// Bounded by FinishBy.
			finish := func() error { return h.Finish(ctx, timedOut) }
			if err := BoundedWithin(ctx, finishGrace, "the drain's last steps on "+c.ch.Name, finish); err != nil {
				errs = append(errs, err)
			}
		}
		c.drainErr = errors.Join(errs...)
	})
	return c.drainErr
}

func (c *Consumer) drainError() *broker.DrainError {
	c.mu.Lock()
	ids := make([]string, 0, len(c.running))
	for d := range c.running {
		ids = append(ids, d.Msg.ID)
	}
	c.mu.Unlock()
	sort.Strings(ids)
	return &broker.DrainError{Channel: c.ch.Name, Group: c.ch.Group, Running: ids}
}

// waitCtx waits for wg or ctx; it reports whether wg finished.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// Subscriptions is an adapter's set of live subscriptions, drained by Close.
type Subscriptions struct {
	mu sync.Mutex
	m  map[broker.Subscription]struct{}
}

// Add records s.
func (s *Subscriptions) Add(sub broker.Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[broker.Subscription]struct{}{}
	}
	s.m[sub] = struct{}{}
}

// Remove forgets s (a drained subscription calls it).
func (s *Subscriptions) Remove(sub broker.Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sub)
}

// Len returns the number of live subscriptions.
func (s *Subscriptions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// List returns the live subscriptions.
func (s *Subscriptions) List() []broker.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	subs := make([]broker.Subscription, 0, len(s.m))
	for sub := range s.m {
		subs = append(subs, sub)
	}
	return subs
}

// DrainAll drains every live subscription concurrently, bounded by ctx.
func (s *Subscriptions) DrainAll(ctx context.Context) error {
	s.mu.Lock()
	subs := make([]broker.Subscription, 0, len(s.m))
	for sub := range s.m {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sub.Drain(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// FinishBy is when the drain of a context with deadline dl stops waiting
// for DrainHooks.Finish (which is then reported as abandoned): an adapter
// whose Finish hands messages back plans them to end before it.
func FinishBy(dl time.Time) time.Time { return dl.Add(finishGrace) }

// finishGrace is how long past the drain's deadline Finish may run: shorter
// than the plugin's grace, so a Finish stuck on a frozen link is reported
// beside the DrainError.
const finishGrace = 2 * BoundedGrace / 3

// BoundedGrace is how long past its context's deadline [Bounded] waits for
// a step that watches the context itself to return its own error (a
// drain's names the handlers still running).
const BoundedGrace = 100 * time.Millisecond

// Bounded runs f and returns its error, or an *AbandonedError once ctx has
// ended and BoundedGrace past its deadline has gone by (a step called with
// a context that has already ended gets what is left of that grace, and at
// least a few milliseconds). It is for the driver calls of a stop, a close
// or a send that take no context (closing an AMQP channel, a client's
// Close, a flush): a wait the caller bounded is never much longer than its
// deadline. f runs on a goroutine of its own and must not touch anything
// the caller frees after Bounded returns; it runs to its end whatever
// happens.
func Bounded(ctx context.Context, what string, f func() error) error {
	return BoundedWithin(ctx, BoundedGrace, what, f)
}

// BoundedWithin is [Bounded] with a grace of its own.
func BoundedWithin(ctx context.Context, grace time.Duration, what string, f func() error) error {
	result := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		result <- f()
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
	}
	limit := time.Now().Add(grace)
	if dl, ok := ctx.Deadline(); ok {
		limit = dl.Add(grace)
	}
	wait := time.Until(limit)
	if wait < 5*time.Millisecond {
		wait = 5 * time.Millisecond
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-result:
		return err
	case <-t.C:
		return &broker.AbandonedError{What: what, Err: ctx.Err(), Done: done}
	}
}
