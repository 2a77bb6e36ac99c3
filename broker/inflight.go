package broker

import (
	"context"
	"sync"
)

// Inflight bounds and tracks the handlers running for one subscription. It
// is the MaxInFlight semaphore and the drain barrier every adapter uses.
//
// Fetch loops call Acquire before taking a message (so a full channel fetches
// nothing) and Go to run it; each message frees its own slot when done, so
// no batch holds slots.
type Inflight struct {
	slots     chan struct{}
	wg        sync.WaitGroup
	closing   chan struct{}
	closeOnce sync.Once
}

// NewInflight returns a tracker with max slots (at least 1).
func NewInflight(max int) *Inflight {
	if max < 1 {
		max = 1
	}
	return &Inflight{slots: make(chan struct{}, max), closing: make(chan struct{})}
}

// Acquire takes a slot, blocking until one is free. It returns false when
// the tracker is closing or ctx ends.
func (f *Inflight) Acquire(ctx context.Context) bool {
	select {
	case <-f.closing:
		return false
	default:
	}
	select {
	case f.slots <- struct{}{}:
		return true
	case <-f.closing:
		return false
	case <-ctx.Done():
		return false
	}
}

// TryAcquire takes a slot if one is free right now.
func (f *Inflight) TryAcquire() bool {
	select {
	case <-f.closing:
		return false
	default:
	}
	select {
	case f.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Release frees a slot taken by Acquire that was not handed to Go.
func (f *Inflight) Release() { <-f.slots }

// Go runs fn on its own goroutine; the slot taken by Acquire is freed when
// fn returns.
func (f *Inflight) Go(fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer f.Release()
		fn()
	}()
}

// Track counts fn as in flight without using a slot (settling work such as
// an ack or a dead-letter publish that must finish before Drain returns).
func (f *Inflight) Track(fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
}

// Running returns the number of slots in use.
func (f *Inflight) Running() int { return len(f.slots) }

// Free returns the number of free slots.
func (f *Inflight) Free() int { return cap(f.slots) - len(f.slots) }

// Max returns the bound.
func (f *Inflight) Max() int { return cap(f.slots) }

// Close makes Acquire fail from now on. It is idempotent.
func (f *Inflight) Close() { f.closeOnce.Do(func() { close(f.closing) }) }

// Closing is closed once Close was called.
func (f *Inflight) Closing() <-chan struct{} { return f.closing }

// Wait blocks until every running handler returned, or ctx ends
// (ErrDrainTimeout).
func (f *Inflight) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ErrDrainTimeout
	}
}
