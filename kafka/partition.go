package kafka

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// partition reads one partition for one generation. Its messages run up
// to MaxInFlight at once (shared with the channel's other partitions), in
// lanes when the channel is ordered. The offsets read are tracked in order
// and the commit position only moves past a message once it and every
// message before it were settled, so a crash or a rebalance never skips a
// message that was not processed.
type partition struct {
	g  *generation
	s  *subscription
	id int

	mu        sync.Mutex
	cond      *sync.Cond // signalled when running, queued or held go down
	offs      []int64    // offsets read, in order, from head on not all settled
	done      []bool
	head      int
	pos       int64 // commit position: the first offset not settled
	committed int64
	running   int // handed to a handler and not settled
	writing   int // retry copies being written whose outcome is not known yet
	held      int // waiting (retry not-before, local retry, lane) without a slot
	timers    map[*time.Timer]heldMsg
	lanes     map[string][]*delivery // ordered channels: the head of a lane runs, the rest wait
	closed    bool
	// careful counts the messages still to run one at a time after an
	// unclean handover; headRuns is the runs already started of the
	// message at the committed offset (commit metadata run:<n>).
	careful  int
	headRuns int
	headOff  int64
	// inherited: the partition came in careful (beCareful); headRan: the
	// message at headOff started a counted run here that was not handed
	// back (uncountRun).
	inherited bool
	headRan   bool
	// runMeta is the metadata of the last run count committed (countRun),
	// for the message at runOff, while it is not settled.
	runMeta string
	runOff  int64
}

func newPartition(g *generation, id int, start int64) *partition {
	p := &partition{g: g, s: g.s, id: id, pos: start, committed: start, timers: map[*time.Timer]heldMsg{},
		lanes: map[string][]*delivery{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// maxHeld bounds the messages of a partition waiting without a slot; the
// partition is not read further while it is reached.
func (p *partition) maxHeld() int { return max(4*p.s.MaxInFlight(), 256) }

// mustWait tells whether the partition must not be read further for now
// (p.mu held): too many of its messages wait without a slot (maxHeld), the
// messages held by the subscription's partitions take its read-ahead
// budget in bytes (a partition with none held may still read one), or a
// careful run is under way.
func (p *partition) mustWait() bool {
	return p.held >= p.maxHeld() || p.held > 0 && p.s.heldBytes.Load() >= p.s.readAhead ||
		p.careful > 0 && p.running > 0
}

// addHeld counts d in (n = 1) or out of (n = -1) the messages held without
// a slot (p.mu held), in number for the partition and in bytes for the
// subscription, at most once each way; when the bytes fall under the
// read-ahead budget, the subscription's partitions waiting for it read
// again.
func (p *partition) addHeld(d *delivery, n int) {
	if d.held == (n > 0) {
		return
	}
	d.held = n > 0
	p.held += n
	size := int64(n) * d.size()
	after := p.s.heldBytes.Add(size)
	if size < 0 && after < p.s.readAhead && after-size >= p.s.readAhead {
		go p.s.wakeReaders()
	}
}

// run reads the partition until the generation ends (or, from the
// drain, until reading stops and the group is left), then waits for its
// running messages, bounded by the rebalance timeout, and commits what they
// processed.
func (p *partition) run(ctx context.Context) {
	s := p.s
	start := p.pos
	if start < 0 {
		start = kafkago.FirstOffset
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: s.a.brokers, Dialer: s.cfg.Dialer, Topic: s.ch.Name, Partition: p.id,
		// kafka-go's reader waits for a fetch's answer until MaxWait, and
		// asks the broker to answer within MaxWait less a round-trip
		// allowance (1 s from a MaxWait of 1 s on, a quarter below): the
		// broker's long poll stays MaxWait and an answer may take 1 s of
		// round trip (a slow link never makes every fetch time out).
		MinBytes: 1, MaxBytes: s.opts.MaxBytes, MaxWait: s.opts.MaxWait + time.Second,
		QueueCapacity:   p.g.queueCapacity(),
		ReadBackoffMin:  50 * time.Millisecond,
		ReadBackoffMax:  time.Second,
		ReadLagInterval: -1,
		ErrorLogger: kafkago.LoggerFunc(func(f string, args ...any) {
			s.log.Debug("channels/kafka: reader: "+broker.Redact(strings.TrimSpace(fmt.Sprintf(f, args...))), "channel", s.ch.Name, "partition", p.id)
		}),
	})
	if err := r.SetOffset(start); err != nil {
		s.log.Error("channels/kafka: cannot position the reader", "channel", s.ch.Name, "partition", p.id, "error", err)
	}
	fctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.fetchCtx, cancel)
	fetched := make(chan struct{})
	go func() {
		defer close(fetched)
		p.fetch(fctx, r)
	}()
	<-ctx.Done()
	ended := time.Now()
	cancel()
	stop()
	copies := p.close()
	<-fetched
	_ = r.Close()
	// The whole hand-over fits in the time the group allows for rejoining
	// (handoverSpan); the running messages get the first part of it
	// (handoverWait), the hand-over of the retry copies and the commit the
	// rest. A message still running after the wait is delivered again to
	// the partition's next owner.
	hctx, hcancel := context.WithDeadline(context.Background(), ended.Add(s.handoverSpan()))
	defer hcancel()
	wctx, wcancel := context.WithDeadline(hctx, ended.Add(s.handoverWait()))
	defer wcancel()
	// A drain waits for the running handlers within its own deadline: the
	// wait for them and the writes of the retry copies end with it too,
	// whether the rebalance began before the drain or during it (the
	// drain's final commit and its leaving the group wait for this
	// hand-over).
	cctx, ccancel := context.WithCancel(hctx)
	defer ccancel()
	go func() {
		select {
		case <-s.drainExpired:
			wcancel()
			ccancel()
		case <-hctx.Done():
		}
	}()
	p.handOver(cctx, copies)
	meta := (*partition).cleanMeta
	if !p.waitIdle(wctx) {
		meta = (*partition).uncleanMeta // a message still runs: its next owner is careful
	}
	p.g.commitWithin(hctx, []*partition{p}, meta, true)
	p.g.handedOff()
}

// queueCapacity is the read-ahead of each partition's reader, in messages:
// 2 x MaxInFlight shared by the generation's partitions, at least 4 each
// (a consumer of many partitions does not read ahead MaxBytes of each).
func (g *generation) queueCapacity() int {
	return min(max(2*g.s.MaxInFlight()/max(len(g.parts), 1), 4), 1000)
}

// fetch reads messages and dispatches them.
func (p *partition) fetch(ctx context.Context, r *kafkago.Reader) {
	s := p.s
	var retry kit.Reconnect
	for {
		p.mu.Lock()
		for p.mustWait() && !p.closed && ctx.Err() == nil {
			p.cond.Wait()
		}
		p.mu.Unlock()
		m, err := r.FetchMessage(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("channels/kafka: reading a partition failed, retrying", "channel", s.ch.Name, "partition", p.id,
				"error", broker.Redact(err.Error()), "in", retry.Next())
			if _, ok := retry.Failed(ctx.Done()); !ok {
				return
			}
			continue
		}
		retry.Succeeded()
		if !p.dispatch(ctx, m) {
			return
		}
	}
}

// dispatch decides what to do with a message just read: skip it (a retry
// of another group), queue it behind its lane, hold it (a retry copy whose
// backoff has not passed, at the head of its lane), or run it. False when
// the subscription stops.
func (p *partition) dispatch(ctx context.Context, m kafkago.Message) bool {
	s := p.s
	p.track(m.Offset)
	d := p.delivery(m, nil)
	if d == nil {
		p.settled(m.Offset)
		return true
	}
	if lane := d.lane(); lane != noLane {
		p.mu.Lock()
		if p.closed {
			// The lanes were released by close: the message is left
			// unsettled, for the next owner, and takes no read-ahead room.
			p.mu.Unlock()
			return false
		}
		q := p.lanes[lane]
		p.lanes[lane] = append(q, d)
		if len(q) > 0 {
			p.addHeld(d, 1)
			p.mu.Unlock()
			return true
		}
		p.mu.Unlock()
	}
	if wait := p.wait(d); wait > 0 {
		p.hold(d, wait, true)
		return true
	}
	// The wait for a slot ends with the partition: a message read from a
	// partition handed over is left unsettled, for its next owner.
	if !s.AcquireForFetch(ctx) {
		return false
	}
	return p.start(d)
}

// launchQueued starts the next message of a lane, counted in held: once a
// slot is free, or, for a retry copy, once its backoff passed.
func (p *partition) launchQueued(d *delivery) {
	if wait := p.wait(d); wait > 0 {
		p.mu.Lock()
		p.addHeld(d, -1) // counted again by hold
		p.mu.Unlock()
		p.hold(d, wait, true)
		return
	}
	p.startLater(d)
}

// start runs d on a slot already taken.
//
// The partition's closing and the count of its running messages are read
// and changed together: a message either counts as running before the
// partition is closed (its hand-over waits for it) or does not run at all
// (left unsettled, for the next owner), never runs after the hand-over.
func (p *partition) start(d *delivery) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.s.ReleaseSlot()
		return false
	}
	p.running++
	p.mu.Unlock()
	// Counted as running first: a hand-over that closes the partition now
	// waits for this message, and countRun, which sees the closing under
	// commitMu, counts no run that will not start.
	if !p.countRun(d) {
		p.mu.Lock()
		p.running--
		p.cond.Broadcast()
		p.mu.Unlock()
		p.s.ReleaseSlot()
		return false
	}
	p.s.Run(&d.Delivery, d.finished)
	return true
}

// startLater runs d once a slot is free, before new reads take one.
func (p *partition) startLater(d *delivery) {
	go func() {
		s := p.s
		s.WantSlots()
		ok := !p.isClosed() && s.Acquire()
		s.SlotsGranted()
		p.mu.Lock()
		p.addHeld(d, -1)
		p.cond.Broadcast()
		p.mu.Unlock()
		if !ok {
			return // stopping: left unsettled, read again by the next owner
		}
		p.start(d)
	}()
}

// heldMsg is a message waiting in hold; copy: it is a retry copy read back
// from the topic, waiting for its not-before time.
type heldMsg struct {
	d    *delivery
	copy bool
}

// hold runs d after wait without taking a slot meanwhile. Its offset stays
// uncommitted until it ran; if the partition is lost first, a retry copy
// (copy) is handed over (handOver), anything else is read again by the next
// owner and held for what is left of the wait.
func (p *partition) hold(d *delivery, wait time.Duration, copy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.addHeld(d, 1)
	var t *time.Timer
	t = time.AfterFunc(wait, func() {
		p.mu.Lock()
		_, live := p.timers[t]
		delete(p.timers, t)
		p.mu.Unlock()
		if live {
			p.startLater(d)
		}
	})
	p.timers[t] = heldMsg{d, copy}
}

func (p *partition) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// track records an offset read, in order.
func (p *partition) track(off int64) {
	p.mu.Lock()
	p.offs = append(p.offs, off)
	p.done = append(p.done, false)
	p.mu.Unlock()
}

// settled marks off processed and moves the commit position past every
// settled offset at the head.
func (p *partition) settled(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lo, hi := p.head, len(p.offs)
	for lo < hi {
		mid := (lo + hi) / 2
		if p.offs[mid] < off {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(p.offs) && p.offs[lo] == off {
		p.done[lo] = true
	}
	for p.head < len(p.offs) && p.done[p.head] {
		p.pos = p.offs[p.head] + 1
		p.head++
	}
	if p.head > 1024 && p.head*2 > len(p.offs) {
		n := copy(p.offs, p.offs[p.head:])
		copy(p.done, p.done[p.head:])
		p.offs, p.done, p.head = p.offs[:n], p.done[:n], 0
	}
}

// position returns the commit position and whether it moved since the
// last commit.
func (p *partition) position() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos, p.pos > p.committed && p.pos >= 0
}

func (p *partition) committedAt(off int64) {
	p.mu.Lock()
	if off > p.committed {
		p.committed = off
	}
	p.mu.Unlock()
}
