package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Lifecycle is the connection skeleton of an adapter: the current
// connection (read without a lock on every send), the state that answers
// ErrNotConnected before Connect and ErrClosed after Close, the
// subscriptions that Close drains, and the lock that orders Connect,
// Subscribe and Close. An adapter embeds one and supplies what is its own:
// how to dial, and how to tear down.
type Lifecycle[C any] struct {
	// Mu orders Connect, Subscribe and Close.
	Mu    sync.Mutex
	State ConnState
	// Subs are the subscriptions Close drains.
	Subs Subscriptions
	// Env is the environment given to Connect, normalized.
	Env broker.Env
	cur atomic.Pointer[C]
}

// Connect dials once: when connected it returns nil at once. dial runs
// under Mu, after Env was set; the connection it returns becomes current.
func (l *Lifecycle[C]) Connect(env broker.Env, dial func() (*C, error)) error {
	l.Mu.Lock()
	defer l.Mu.Unlock()
	if l.State.Connected() {
		return nil
	}
	l.Env = env.Normalize()
	c, err := dial()
	if err != nil {
		return err
	}
	l.cur.Store(c)
	l.State.SetConnected()
	return nil
}

// Load returns the connection, nil before Connect and after Close.
func (l *Lifecycle[C]) Load() *C { return l.cur.Load() }

// Current returns the connection, or ErrNotConnected before Connect and
// ErrClosed once Close has cleared it.
func (l *Lifecycle[C]) Current() (*C, error) {
	if c := l.cur.Load(); c != nil {
		return c, nil
	}
	if err := l.State.Check(); err != nil {
		return nil, err
	}
	return nil, broker.ErrClosed // Close is clearing it
}

// Close drains the subscriptions within ctx while the connection still
// serves their settling, then marks the lifecycle closed, clears the
// connection and runs teardown with it (under Mu). Errors are joined. A
// lifecycle that never connected is only marked closed.
func (l *Lifecycle[C]) Close(ctx context.Context, teardown func(c *C) error) error {
	l.Mu.Lock()
	c := l.cur.Load()
	if !l.State.Connected() || c == nil {
		l.State.SetClosed()
		l.Mu.Unlock()
		return nil
	}
	l.Mu.Unlock()
	errs := []error{l.Subs.DrainAll(ctx)}
	l.Mu.Lock()
	defer l.Mu.Unlock()
	l.State.SetClosed()
	l.cur.Store(nil)
	if teardown != nil {
		errs = append(errs, teardown(c))
	}
	return errors.Join(errs...)
}
