package memory

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/broker"
)

// Bus is an in-process broker: named channels, each with durable groups.
type Bus struct {
	mu     sync.RWMutex
	topics map[string]*topic
	seq    atomic.Uint64
	// taps are the followers of channels (Adapter.Tail); ntaps counts them
	// so a send with no follower pays one atomic load.
	tapMu sync.Mutex
	taps  map[string]map[*tap]struct{}
	ntaps atomic.Int32
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{topics: map[string]*topic{}} }

var buses = struct {
	sync.Mutex
	m map[string]*Bus
}{m: map[string]*Bus{}}

// NamedBus returns the process-wide bus with that name, creating it. The
// empty name is the default bus used by "memory://".
func NamedBus(name string) *Bus {
	buses.Lock()
	defer buses.Unlock()
	b, ok := buses.m[name]
	if !ok {
		b = NewBus()
		buses.m[name] = b
	}
	return b
}

// DefaultRetainLimit bounds the messages a channel with no group keeps for
// its first group; a send beyond it fails with ErrRetainLimit.
const DefaultRetainLimit = 10000

// ErrRetainLimit is returned (wrapped in *broker.PublishError) by a send to
// a channel that has no group yet and already retains DefaultRetainLimit
// messages for its first group: the message is refused, never dropped.
var ErrRetainLimit = errors.New("channels/memory: channel has no group and its retained messages reached the limit")

type topic struct {
	groups map[string]*group
	// retained holds messages published while the channel had no group.
	retained []*entry
}

type entry struct {
	id      string
	payload []byte
	headers map[string]string
	attempt int
	ts      time.Time
	// final holds the failure of a run that failed for good whose
	// dead-letter copy could not be written (never on the bus itself).
	final map[string]string
}

// group is a durable consumer group: a FIFO of ready entries shared by its
// members, plus the timers of scheduled retries.
type group struct {
	mu    sync.Mutex
	queue []*entry
	head  int
	// front holds entries handed back (released unrun, or due for a
	// retry): they go before the queue of new messages.
	front []*entry
	// wake is closed by the next push; made only while a member waits.
	wake   chan struct{}
	timers map[*time.Timer]struct{}
	// pending counts entries delivered and not settled, for Stats.
	pending int
	// from, set at creation by a StartAt position, drops the messages
	// published before it.
	from time.Time
}

func newGroup() *group {
	return &group{timers: map[*time.Timer]struct{}{}}
}

func (g *group) push(e *entry) {
	if e.ts.Before(g.from) {
		return
	}
	g.mu.Lock()
	g.queue = append(g.queue, e)
	g.wakeLocked()
}

// pushAll appends es in order with one wake-up.
func (g *group) pushAll(es []*entry) {
	if !g.from.IsZero() {
		es = slices.DeleteFunc(slices.Clone(es), func(e *entry) bool { return e.ts.Before(g.from) })
	}
	g.mu.Lock()
	g.queue = append(g.queue, es...)
	g.wakeLocked()
}

// wakeLocked wakes the waiting members, if any, and unlocks g.
func (g *group) wakeLocked() {
	w := g.wake
	g.wake = nil
	g.mu.Unlock()
	if w != nil {
		close(w)
	}
}

// pop returns the oldest ready entry, blocking until one arrives or stop closes.
func (g *group) pop(stop <-chan struct{}) *entry {
	for {
		g.mu.Lock()
		if len(g.front) > 0 {
			e := g.front[0]
			g.front[0] = nil
			g.front = g.front[1:]
			g.pending++
			g.mu.Unlock()
			return e
		}
		if g.head < len(g.queue) {
			e := g.queue[g.head]
			g.queue[g.head] = nil
			g.head++
			if g.head == len(g.queue) {
				g.queue, g.head = g.queue[:0], 0
			} else if g.head > 1024 && g.head*2 > len(g.queue) {
				n := copy(g.queue, g.queue[g.head:])
				g.queue, g.head = g.queue[:n], 0
			}
			g.pending++
			g.mu.Unlock()
			return e
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		w := g.wake
		g.mu.Unlock()
		select {
		case <-w:
		case <-stop:
			return nil
		}
	}
}

// settle marks a delivered entry as done.
func (g *group) settle() {
	g.mu.Lock()
	g.pending--
	g.mu.Unlock()
}

// retryAfter puts e back at the front of the queue after d: a due retry
// runs before the backlog of new messages.
func (g *group) retryAfter(e *entry, d time.Duration) {
	if d <= 0 {
		g.requeue(e)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending--
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		g.mu.Lock()
		_, live := g.timers[t]
		delete(g.timers, t)
		if live {
			g.pending++ // requeue counts it down again
		}
		g.mu.Unlock()
		if live {
			g.requeue(e)
		}
	})
	g.timers[t] = struct{}{}
}

// requeue gives back an entry that was popped but not processed, or is due
// for a retry: first, so order is kept and retries go before new messages.
func (g *group) requeue(e *entry) {
	g.mu.Lock()
	g.pending--
	g.front = append(g.front, e)
	g.wakeLocked()
}

// groupFor returns the group of a channel, creating both. A new group
// starts as start says. The bus keeps the messages of a channel only while
// it has no group (for the first one): the first group gets them by default
// (FromDefault), all of them with FromOldest, those published at or after
// the time with FromTime, none with FromNewest. A later group can start at
// the newest messages, or at a time not yet past; FromOldest and a past
// time are refused (*broker.UnsupportedError).
func (b *Bus) groupFor(channel, name string, start broker.StartPosition, now time.Time) (*group, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[channel]
	if !ok {
		t = &topic{groups: map[string]*group{}}
		b.topics[channel] = t
	}
	if g, ok := t.groups[name]; ok {
		return g, nil
	}
	g := newGroup()
	first := len(t.groups) == 0
	switch start.From {
	case broker.FromDefault, broker.FromOldest:
		if first {
			g.queue = t.retained
		} else if start.From == broker.FromOldest {
			return nil, &broker.UnsupportedError{Adapter: "Memory", Channel: channel, Setting: "start position oldest",
				Reason: "the memory bus keeps no history of a channel that already has a group"}
		}
	case broker.FromTime:
		g.from = start.Time
		if first {
			g.queue = slices.DeleteFunc(t.retained, func(e *entry) bool { return e.ts.Before(start.Time) })
		} else if start.Time.Before(now) {
			return nil, &broker.UnsupportedError{Adapter: "Memory", Channel: channel, Setting: "start position " + start.String(),
				Reason: "the memory bus keeps no history of a channel that already has a group (a time not yet past is supported)"}
		}
	}
	if first {
		t.retained = nil
	}
	t.groups[name] = g
	return g, nil
}

// publish fans a message out to every group of the channel and returns how
// many groups received it. A channel with no group keeps it for its first
// group, up to DefaultRetainLimit (then ErrRetainLimit).
func (b *Bus) publish(channel string, payload []byte, headers map[string]string, now time.Time) (_ int, err error) {
	id := strconv.FormatUint(b.seq.Add(1), 10)
	if b.ntaps.Load() > 0 {
		defer func() {
			if err == nil {
				b.tapAll(channel, []*entry{{id: id, payload: payload, headers: headers, ts: now}}, nil)
			}
		}()
	}
	b.mu.RLock()
	if t := b.topics[channel]; t != nil && len(t.groups) > 0 {
		// Common case: read-locked fan-out; group membership changes rarely.
		groups := make([]*group, 0, len(t.groups))
		for _, g := range t.groups {
			groups = append(groups, g)
		}
		b.mu.RUnlock()
		for _, g := range groups {
			g.push(&entry{id: id, payload: payload, headers: headers, attempt: 1, ts: now})
		}
		return len(groups), nil
	}
	b.mu.RUnlock()
	b.mu.Lock()
	t := b.topics[channel]
	if t == nil {
		t = &topic{groups: map[string]*group{}}
		b.topics[channel] = t
	}
	if len(t.groups) == 0 {
		if len(t.retained) >= DefaultRetainLimit {
			b.mu.Unlock()
			return 0, ErrRetainLimit
		}
		t.retained = append(t.retained, &entry{id: id, payload: payload, headers: headers, attempt: 1, ts: now})
		b.mu.Unlock()
		return 0, nil
	}
	groups := make([]*group, 0, len(t.groups))
	for _, g := range t.groups {
		groups = append(groups, g)
	}
	b.mu.Unlock()
	for _, g := range groups {
		g.push(&entry{id: id, payload: payload, headers: headers, attempt: 1, ts: now})
	}
	return len(groups), nil
}

// busMsg is one message of a batch.
type busMsg struct {
	payload []byte
	headers map[string]string
}

// publishBatch is publish for many messages: every group of the channel
// gets them in order under one lock; a channel with no group keeps them up
// to DefaultRetainLimit. It returns nil when all were taken, else one error
// per message (ErrRetainLimit for those beyond the limit).
func (b *Bus) publishBatch(channel string, msgs []busMsg, now time.Time) (errs []error) {
	if len(msgs) == 0 {
		return nil
	}
	last := b.seq.Add(uint64(len(msgs)))
	entries := func() []*entry {
		es := make([]*entry, len(msgs))
		for i, m := range msgs {
			id := strconv.FormatUint(last-uint64(len(msgs)-1-i), 10)
			es[i] = &entry{id: id, payload: m.payload, headers: m.headers, attempt: 1, ts: now}
		}
		return es
	}
	if b.ntaps.Load() > 0 {
		tapped := entries()
		defer func() { b.tapAll(channel, tapped, errs) }()
	}
	b.mu.Lock()
	t := b.topics[channel]
	if t == nil {
		t = &topic{groups: map[string]*group{}}
		b.topics[channel] = t
	}
	if len(t.groups) == 0 {
		es := entries()
		room := max(DefaultRetainLimit-len(t.retained), 0)
		if len(es) > room {
			errs = make([]error, len(es))
			for i := room; i < len(es); i++ {
				errs[i] = ErrRetainLimit
			}
			es = es[:room]
		}
		t.retained = append(t.retained, es...)
		b.mu.Unlock()
		return errs
	}
	groups := make([]*group, 0, len(t.groups))
	for _, g := range t.groups {
		groups = append(groups, g)
	}
	b.mu.Unlock()
	for _, g := range groups {
		g.pushAll(entries())
	}
	return nil
}

// GroupStats describes one group of a channel.
type GroupStats struct {
	// Ready is the number of messages waiting for a consumer.
	Ready int
	// Pending is the number of messages delivered and not settled.
	Pending int
	// Scheduled is the number of messages waiting for a retry delay.
	Scheduled int
}

// Stats returns the state of one group, for tests and diagnostics.
func (b *Bus) Stats(channel, groupName string) (GroupStats, bool) {
	b.mu.RLock()
	t := b.topics[channel]
	var g *group
	if t != nil {
		g = t.groups[groupName]
	}
	b.mu.RUnlock()
	if g == nil {
		return GroupStats{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return GroupStats{Ready: len(g.front) + len(g.queue) - g.head, Pending: g.pending, Scheduled: len(g.timers)}, true
}

// Reset stops every pending retry timer and forgets all channels.
func (b *Bus) Reset() {
	b.mu.Lock()
	topics := b.topics
	b.topics = map[string]*topic{}
	b.mu.Unlock()
	for _, t := range topics {
		for _, g := range t.groups {
			g.mu.Lock()
			for tm := range g.timers {
				tm.Stop()
			}
			g.timers = map[*time.Timer]struct{}{}
			g.mu.Unlock()
		}
	}
}

// remove forgets one channel and stops its groups' retry timers.
func (b *Bus) remove(channel string) {
	b.mu.Lock()
	t := b.topics[channel]
	delete(b.topics, channel)
	b.mu.Unlock()
	if t == nil {
		return
	}
	for _, g := range t.groups {
		g.mu.Lock()
		for tm := range g.timers {
			tm.Stop()
		}
		g.timers = map[*time.Timer]struct{}{}
		g.mu.Unlock()
	}
}
