package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Consumer is the delivery skeleton of one subscription: the MaxInFlight
// slots, the handlers' context, the fetch loops, start-once and drain-once,
// and the bookkeeping that lets a drain name what is still running. An
// adapter's subscription embeds it, runs its broker-specific fetch loops
// with Start, hands each fetched message to Run, and drains through Drain
// with hooks for what only its broker does.
type Consumer struct {
	ch     *broker.Channel
	fl     *inflight
	hctx   context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	loops  loopSet

	started   atomic.Bool
	drainOnce sync.Once
	drainErr  error

	mu      sync.Mutex
	running map[*Delivery]struct{}

	// wantMu guards wanted: set while redeliveries (due retries, claimed
	// messages) wait for a slot, so new fetches let them go first.
	wantMu  sync.Mutex
	wanted  bool
	granted chan struct{} // closed when wanted is cleared

	ahead readAhead // messages read ahead of the free slots (Hold)
	work  chan job  // handed to a worker waiting for its next message

	beatStop chan struct{} // closed by the drain once the handlers are done (Beat)
	beats    sync.WaitGroup
}

// NewConsumer returns a consumer for a validated, normalized channel.
func NewConsumer(ch *broker.Channel) *Consumer {
	hctx, cancel := context.WithCancel(context.Background())
	return &Consumer{ch: ch, fl: newInflight(ch.MaxInFlight), hctx: hctx, cancel: cancel,
		stop: make(chan struct{}), running: map[*Delivery]struct{}{}, work: make(chan job), ahead: newReadAhead(),
		beatStop: make(chan struct{})}
}

// Channel returns the channel consumed.
func (c *Consumer) Channel() *broker.Channel { return c.ch }

// Context is the handlers' context: cancelled when a drain's deadline passes
// (and after every drain).
func (c *Consumer) Context() context.Context { return c.hctx }

// Stopping is closed when the drain starts; fetch loops select on it.
func (c *Consumer) Stopping() <-chan struct{} { return c.stop }

// IsStopping reports whether the drain has started.
func (c *Consumer) IsStopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// Sleep waits d or until the drain starts; it reports whether to go on.
func (c *Consumer) Sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stop:
		return false
	}
}

// Start runs each loop on its own goroutine, once; later calls do nothing.
// It reports whether this call started them.
func (c *Consumer) Start(loops ...func()) bool {
	if c.IsStopping() || !c.started.CompareAndSwap(false, true) {
		return false
	}
	for _, l := range loops {
		c.Go(l)
	}
	return true
}

// Go runs one more loop that Drain waits for.
func (c *Consumer) Go(loop func()) {
	c.loops.add()
	go func() {
		defer c.loops.done()
		loop()
	}()
}

// LoopsDone returns a channel closed once every loop has returned.
func (c *Consumer) LoopsDone() <-chan struct{} {
	done := make(chan struct{})
	go func() { c.loops.wait(context.Background()); close(done) }()
	return done
}

// Started reports whether Start ran.
func (c *Consumer) Started() bool { return c.started.Load() }

// Acquire takes a MaxInFlight slot, blocking until one is free; false when
// draining.
func (c *Consumer) Acquire() bool { return c.fl.Acquire(c.hctx) }

// AcquireForFetch takes a slot for fetching new messages. While
// redeliveries wait for a slot (WantSlots), it leaves the freed slots to
// them and waits, so that due retries and claimed messages run before new
// ones. False when draining or when ctx ends (the fetcher's own end: a
// partition handed over to another member).
func (c *Consumer) AcquireForFetch(ctx context.Context) bool {
	for {
		if !c.fl.Acquire(ctx) {
			return false
		}
		c.wantMu.Lock()
		wanted, granted := c.wanted, c.granted
		c.wantMu.Unlock()
		if !wanted {
			return true
		}
		c.fl.Release()
		select {
		case <-granted:
		case <-c.stop:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// WantSlots records that redeliveries are waiting for a free slot: new
// fetches pause until SlotsGranted.
func (c *Consumer) WantSlots() {
	c.wantMu.Lock()
	defer c.wantMu.Unlock()
	if !c.wanted {
		c.wanted, c.granted = true, make(chan struct{})
	}
}

// SlotsGranted clears WantSlots: the waiting redeliveries got their slots
// (or are gone).
func (c *Consumer) SlotsGranted() {
	c.wantMu.Lock()
	defer c.wantMu.Unlock()
	if c.wanted {
		c.wanted = false
		close(c.granted)
	}
}

// TryAcquire takes a slot if one is free right now.
func (c *Consumer) TryAcquire() bool { return c.fl.TryAcquire() }

// ReleaseSlot frees a slot taken by Acquire that was not handed to Run (or
// runs the oldest held message on it: see Hold).
func (c *Consumer) ReleaseSlot() {
	if d := c.handOff(); d != nil {
		c.start(d, nil)
	}
}

// Free returns the number of free slots.
func (c *Consumer) Free() int { return c.fl.Free() }

// MaxInFlight returns the bound.
func (c *Consumer) MaxInFlight() int { return c.fl.Max() }

// Run delivers d on a goroutine of its own on a slot already taken:
// admission, handler, outcome and settling ([Deliver]). The slot is
// freed once the message is settled. done, when not nil, is called after
// settling.
//
// The goroutines are reused: one that finished its message waits up to
// WorkerIdle for the next before it ends, so a busy channel keeps at most
// MaxInFlight of them, with their grown stacks, instead of starting one
// per message. They end with the drain.
func (c *Consumer) Run(d *Delivery, done func(broker.Outcome)) {
	c.track(d) // in flight on its slot, which the chain frees
	c.start(d, done)
}

// track records d as running, for the drain's report.
func (c *Consumer) track(d *Delivery) {
	c.mu.Lock()
	c.running[d] = struct{}{}
	c.mu.Unlock()
}

// start hands d, already counted and tracked, to a waiting worker or a new
// one.
func (c *Consumer) start(d *Delivery, done func(broker.Outcome)) {
	select {
	case c.work <- job{d, done}:
	default:
		go c.worker(d, done)
	}
}

// WorkerIdle is how long a handler goroutine waits for the next message
// before it ends.
const WorkerIdle = 5 * time.Second

// job is a message handed to a waiting worker.
type job struct {
	d    *Delivery
	done func(broker.Outcome)
}

// worker runs d, then the messages handed to it while it waits.
func (c *Consumer) worker(d *Delivery, done func(broker.Outcome)) {
	c.runChain(d, done)
	idle := time.NewTimer(WorkerIdle)
	defer idle.Stop()
	for {
		select {
		case j := <-c.work:
			c.runChain(j.d, j.done)
			idle.Reset(WorkerIdle)
		case <-idle.C:
			return
		case <-c.hctx.Done():
			return
		}
	}
}

// runChain delivers d on its slot, then the held messages that slot is
// handed (handOff), until it is freed.
func (c *Consumer) runChain(d *Delivery, done func(broker.Outcome)) {
	for d != nil {
		out := Deliver(c.hctx, c.ch, d)
		c.mu.Lock()
		delete(c.running, d)
		c.mu.Unlock()
		if done != nil {
			done(out)
		}
		d, done = c.handOff(), nil // the slot goes on to the next held message, or is freed
	}
}

// loopSet counts the running loops. Unlike a sync.WaitGroup, a loop may be
// added while a drain waits (a fetch loop started by Start or Go racing
// the drain): the drain then waits for it too.
type loopSet struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n reaches 0 while someone waits
}

func (l *loopSet) add() {
	l.mu.Lock()
	l.n++
	l.mu.Unlock()
}

func (l *loopSet) done() {
	l.mu.Lock()
	l.n--
	if l.n == 0 && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
	l.mu.Unlock()
}

// wait reports whether every loop returned before ctx ended.
func (l *loopSet) wait(ctx context.Context) bool {
	l.mu.Lock()
	if l.n == 0 {
		l.mu.Unlock()
		return true
	}
	if l.idle == nil {
		l.idle = make(chan struct{})
	}
	idle := l.idle
	l.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}
