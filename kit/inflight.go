package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"sync"
	"sync/atomic"
)

// inflight bounds and tracks the handlers running for one subscription. It
// is the MaxInFlight semaphore and the drain barrier every adapter uses.
//
// Fetch loops call Acquire before taking a message (so a full channel fetches
// nothing) and Go to run it; each message frees its own slot when done, so
// no batch holds slots.
//
// The barrier (Wait) counts every slot taken, from Acquire to Release: a
// slot that a fetcher took just before Close, for a message it has not
// started yet, is waited for like a running handler. A
// slot taken once Close was called is given back at once (Acquire fails),
// so nothing starts after Wait returned.
type inflight struct {
	slots     chan struct{}
	closing   chan struct{}
	closeOnce sync.Once

	n      atomic.Int64  // slots taken and tracked work
	closed atomic.Bool   // Close was called: no slot is counted any more
	mu     sync.Mutex    // guards idle; taken only when n reaches 0 and by Wait
	idle   chan struct{} // closed when n drops to 0 while Wait waits
}

// newInflight returns a tracker with max slots (at least 1).
func newInflight(max int) *inflight {
	if max < 1 {
		max = 1
	}
	return &inflight{slots: make(chan struct{}, max), closing: make(chan struct{})}
}

// Acquire takes a slot, blocking until one is free. It returns false when
// the tracker is closing or ctx ends.
func (f *inflight) Acquire(ctx context.Context) bool {
	select {
	case <-f.closing:
		return false
	default:
	}
	select {
	case f.slots <- struct{}{}:
		return f.taken()
	case <-f.closing:
		return false
	case <-ctx.Done():
		return false
	}
}

// TryAcquire takes a slot if one is free right now.
func (f *inflight) TryAcquire() bool {
	select {
	case <-f.closing:
		return false
	default:
	}
	select {
	case f.slots <- struct{}{}:
		return f.taken()
	default:
		return false
	}
}

// taken counts a slot just taken, unless Close came first: the slot is
// then given back.
// The count comes before the check: a Wait that starts after Close either
// sees the slot counted or the slot is given back, never started.
func (f *inflight) taken() bool {
	f.n.Add(1)
	if f.closed.Load() {
		<-f.slots
		f.done()
		return false
	}
	return true
}

// Release frees a slot taken by Acquire that was not handed to Go.
func (f *inflight) Release() {
	<-f.slots
	f.done()
}

// done uncounts a slot or a tracked piece of work.
func (f *inflight) done() {
	if f.n.Add(-1) != 0 {
		return
	}
	f.mu.Lock()
	if f.idle != nil && f.n.Load() == 0 {
		close(f.idle)
		f.idle = nil
	}
	f.mu.Unlock()
}

// Go runs fn on its own goroutine; the slot taken by Acquire is freed when
// fn returns.
func (f *inflight) Go(fn func()) {
	go func() {
		defer f.Release()
		fn()
	}()
}

// Running returns the number of slots in use.
func (f *inflight) Running() int { return len(f.slots) }

// Free returns the number of free slots.
func (f *inflight) Free() int { return cap(f.slots) - len(f.slots) }

// Max returns the bound.
func (f *inflight) Max() int { return cap(f.slots) }

// Close makes Acquire fail from now on. It is idempotent.
func (f *inflight) Close() {
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		close(f.closing)
	})
}

// Closing is closed once Close was called.
func (f *inflight) Closing() <-chan struct{} { return f.closing }

// Wait blocks until every slot taken is free again and every tracked piece
// of work is done, or ctx ends (ErrDrainTimeout).
func (f *inflight) Wait(ctx context.Context) error {
	for {
		f.mu.Lock()
		if f.n.Load() == 0 {
			f.mu.Unlock()
			return nil
		}
		if f.idle == nil {
			f.idle = make(chan struct{})
		}
		idle := f.idle
		f.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return broker.ErrDrainTimeout
		}
	}
}
