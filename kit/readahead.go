package kit

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ReleaseTimeout bounds the hand-back of one message held (read ahead) when
// a drain starts.
const ReleaseTimeout = 5 * time.Second

// readAhead holds the messages a fetch loop read ahead of the free slots:
// they run in fetch order, each on the slot of the handler that finishes
// next (on its goroutine: no hand-over), and a drain hands back
// (Settler.Release) those that never got one. At most MaxInFlight messages
// are held, so the fetch loop's next read overlaps the running handlers by
// one round of messages at most.
//
// Invariant, kept under mu: while messages are held, no slot is free. Every
// slot freed goes to the oldest held message first (handOff).
type readAhead struct {
	mu     sync.Mutex
	q      []*Delivery
	closed bool
	freed  chan struct{} // a held message started: AwaitFetch may read again
	// started: Hold handed a message to a handler goroutine since the last
	// AwaitFetch, which yields the processor to it before the next read.
	started atomic.Bool
}

func newReadAhead() readAhead { return readAhead{freed: make(chan struct{}, 1)} }

// AwaitFetch waits until the fetch loop may read: fewer than MaxInFlight
// messages are held and no redelivery waits for a slot (WantSlots). It
// returns how many messages the read may take (MaxInFlight less those
// held); false when draining. A fetch loop that reads ahead hands every
// message it read to Hold.
//
// When Hold started handlers since the last call, AwaitFetch first yields
// the processor (runtime.Gosched): a handler woken by the fetch loop would
// otherwise wait, on the same processor, until the loop's next read has
// been written and blocks.
func (c *Consumer) AwaitFetch() (int, bool) {
	r := &c.ahead
	if r.started.Swap(false) {
		runtime.Gosched()
	}
	for {
		c.wantMu.Lock()
		wanted, granted := c.wanted, c.granted
		c.wantMu.Unlock()
		if wanted {
			select {
			case <-granted:
			case <-c.stop:
				return 0, false
			}
			continue
		}
		r.mu.Lock()
		n := c.fl.Max() - len(r.q)
		r.mu.Unlock()
		if n > 0 {
			return n, !c.IsStopping()
		}
		select {
		case <-r.freed:
		case <-c.stop:
			return 0, false
		}
	}
}

// Hold runs a fetched message now if a slot is free, else when the next
// handler finishes, after the messages held before it. Once the drain
// started it is handed back instead (Release), unrun and with no attempt
// used. The fetch loop holds no more than AwaitFetch allowed.
func (c *Consumer) Hold(d *Delivery) {
	r := &c.ahead
	r.mu.Lock()
	if r.closed || c.IsStopping() {
		r.mu.Unlock()
		handBack(d)
		return
	}
	if len(r.q) == 0 && c.fl.TryAcquire() {
		r.mu.Unlock()
		c.Run(d, nil)
		r.started.Store(true)
		return
	}
	r.q = append(r.q, d)
	r.mu.Unlock()
}

// handOff is called with a slot that its holder is done with: it returns the
// oldest held message, counted in flight on that slot, or frees the slot
// when none is held (or the drain started).
func (c *Consumer) handOff() *Delivery {
	r := &c.ahead
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.q) == 0 || r.closed || c.IsStopping() {
		c.fl.Release()
		return nil
	}
	d := r.q[0]
	r.q[0] = nil
	r.q = r.q[1:]
	c.track(d) // in flight on the slot handed over
	select {
	case r.freed <- struct{}{}:
	default:
	}
	return d
}

// closeAhead refuses further holds and hands back what is held, within the
// drain's ctx: what cannot be handed back in time stays with the broker,
// which delivers it again after its idle or ack-wait time (no attempt used).
func (c *Consumer) closeAhead(ctx context.Context) {
	r := &c.ahead
	r.mu.Lock()
	r.closed = true
	q := r.q
	r.q = nil
	r.mu.Unlock()
	for _, d := range q {
		if ctx.Err() != nil {
			return
		}
		handBackWithin(ctx, d)
	}
}

// handBack releases a message that will not run, within ReleaseTimeout.
func handBack(d *Delivery) { handBackWithin(context.Background(), d) }

func handBackWithin(ctx context.Context, d *Delivery) {
	ctx, cancel := context.WithTimeout(ctx, ReleaseTimeout)
	defer cancel()
	_ = d.Settle.Release(ctx)
}
