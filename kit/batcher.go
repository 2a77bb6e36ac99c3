package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"sync"
)

// Batcher collects items (acknowledgements, offsets to commit) from many
// goroutines and hands them to flush in batches: whatever is queued when the
// flusher is free goes in one call, so a lone item is flushed at once and a
// burst shares round trips. Flush calls never overlap.
type Batcher[T any] struct {
	size  int
	flush func([]T)
	q     chan T
	stop  chan struct{}
	done  chan struct{}

	mu      sync.RWMutex
	closed  bool
	started bool
}

// NewBatcher returns a batcher of at most size items per flush.
func NewBatcher[T any](size int, flush func([]T)) *Batcher[T] {
	size = max(size, 1)
	return &Batcher[T]{size: size, flush: flush, q: make(chan T, 4*size), stop: make(chan struct{}), done: make(chan struct{})}
}

// Start runs the flusher; it runs once.
func (b *Batcher[T]) Start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return
	}
	b.started = true
	go b.loop()
}

// Add queues an item, waiting while the queue is full. After Close it
// returns ErrClosed and the item is not flushed.
func (b *Batcher[T]) Add(it T) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return broker.ErrClosed
	}
	select {
	case b.q <- it:
		return nil
	case <-b.stop:
		return broker.ErrClosed
	}
}

// TryAdd queues an item when the queue has room right now; false when it is
// full (a flush is then still to come) or after Close.
func (b *Batcher[T]) TryAdd(it T) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return false
	}
	select {
	case b.q <- it:
		return true
	default:
		return false
	}
}

func (b *Batcher[T]) loop() {
	defer close(b.done)
	items := make([]T, 0, b.size)
	for {
		select {
		case it := <-b.q:
			items = append(items[:0], it)
		case <-b.stop:
			b.drainQueue(items[:0])
			return
		}
	more:
		for len(items) < b.size {
			select {
			case it := <-b.q:
				items = append(items, it)
			default:
				break more
			}
		}
		b.flush(items)
	}
}

// drainQueue flushes what is left in the queue at Close.
func (b *Batcher[T]) drainQueue(items []T) {
	for {
		select {
		case it := <-b.q:
			if items = append(items, it); len(items) == b.size {
				b.flush(items)
				items = items[:0]
			}
		default:
			if len(items) > 0 {
				b.flush(items)
			}
			return
		}
	}
}

// Stopping is closed once Close was called; a flush that retries selects on
// it to stop waiting between tries.
func (b *Batcher[T]) Stopping() <-chan struct{} { return b.stop }

// Close refuses new items, flushes the queued ones and waits for the
// flusher, bounded by ctx (ErrDrainTimeout).
func (b *Batcher[T]) Close(ctx context.Context) error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.stop)
	}
	started := b.started
	b.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		return broker.ErrDrainTimeout
	}
}
