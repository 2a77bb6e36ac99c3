package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/microchannels/channels/broker"
)

// The operations abilities (package dlq and the channels command).
//
// The bus keeps a message in the queue of each group of its channel until a
// member of the group takes it, or, on a channel with no group, in the
// channel itself for its first group. What the tooling sees of a channel is
// that: the messages retained by a channel with no group, or the messages
// waiting in its groups' queues (ready or handed back, once however many
// groups hold a copy), oldest first. A message a member has taken and not
// settled, and a retry waiting for its delay, are not in any queue and are
// not seen. IDs are the bus's delivery positions (Message.ID), unique on a
// bus and increasing with each send.
var (
	_ broker.DeadLetterStore = (*Adapter)(nil)
	_ broker.MessageRemover  = (*Adapter)(nil)
	_ broker.Tailer          = (*Adapter)(nil)
	_ broker.ChannelLister   = (*Adapter)(nil)
)

// BrowseDeadLetters calls fn with each message queue holds (see above),
// oldest first, until fn returns false. It takes nothing from any group.
func (a *Adapter) BrowseDeadLetters(ctx context.Context, queue string, fn func(*broker.StoredMessage) bool) error {
	if err := a.state.Check(); err != nil {
		return err
	}
	for _, e := range a.bus.held(queue) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !fn(stored(queue, e)) {
			return nil
		}
	}
	return nil
}

// RemoveDeadLetters removes the messages with these IDs from queue (from
// every group's queue that holds a copy) and returns how many IDs it found.
func (a *Adapter) RemoveDeadLetters(_ context.Context, queue string, ids ...string) (int, error) {
	if err := a.state.Check(); err != nil {
		return 0, err
	}
	return a.bus.removeIDs(queue, ids), nil
}

// RemoveMessage removes the message id from channel: from the messages the
// channel retains and from every group's queue. A message a member has
// taken is not found (broker.ErrNotFound).
func (a *Adapter) RemoveMessage(_ context.Context, channel, id string) error {
	if err := a.state.Check(); err != nil {
		return err
	}
	if a.bus.removeIDs(channel, []string{id}) == 0 {
		return fmt.Errorf("%w: message %q in channel %q", broker.ErrNotFound, id, channel)
	}
	return nil
}

// TailBuffer bounds the messages a Tail holds for its callback; a follower
// that falls that far behind ends with ErrTailBehind, so it never misses a
// message silently and never slows the senders.
const TailBuffer = 10000

// ErrTailBehind ends a Tail whose callback fell TailBuffer messages behind.
var ErrTailBehind = errors.New("channels/memory: tail fell too far behind the channel")

// Tail calls fn with each message sent to channel after Tail started, as
// sent (every group's copy is the same message: it is seen once), until
// ctx ends or fn returns false. It takes nothing from any group.
func (a *Adapter) Tail(ctx context.Context, channel string, fn func(*broker.StoredMessage) bool) error {
	if err := a.state.Check(); err != nil {
		return err
	}
	t := &tap{wake: make(chan struct{}, 1)}
	a.bus.addTap(channel, t)
	defer a.bus.removeTap(channel, t)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.wake:
		}
		t.mu.Lock()
		batch, behind := t.queue, t.behind
		t.queue = nil
		t.mu.Unlock()
		for _, e := range batch {
			if ctx.Err() != nil {
				return nil
			}
			if !fn(stored(channel, e)) {
				return nil
			}
		}
		if behind {
			return fmt.Errorf("%w: channel %q", ErrTailBehind, channel)
		}
	}
}

// Channels lists the bus's channels whose name starts with prefix, sorted,
// with their groups' backlogs. Messages is what a channel with no group
// retains; -1 for a channel with groups (the bus stores messages per group:
// see each group's Lag).
func (a *Adapter) Channels(_ context.Context, prefix string) ([]broker.ChannelInfo, error) {
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	b := a.bus
	b.mu.RLock()
	type named struct {
		name   string
		groups []string
		n      int
	}
	var list []named
	for name, t := range b.topics {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		n := named{name: name, n: len(t.retained)}
		for g := range t.groups {
			n.groups = append(n.groups, g)
		}
		list = append(list, n)
	}
	b.mu.RUnlock()
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	out := make([]broker.ChannelInfo, 0, len(list))
	for _, n := range list {
		ci := broker.ChannelInfo{Name: n.name, Messages: int64(n.n)}
		if len(n.groups) > 0 {
			ci.Messages = -1
		}
		sort.Strings(n.groups)
		for _, g := range n.groups {
			st, ok := b.Stats(n.name, g)
			if !ok {
				continue // removed meanwhile
			}
			ci.Groups = append(ci.Groups, broker.GroupInfo{Name: g,
				GroupLag: broker.GroupLag{Lag: int64(st.Ready + st.Scheduled), Pending: int64(st.Pending)}})
		}
		out = append(out, ci)
	}
	return out, nil
}

// stored is the StoredMessage of an entry: copies, so the caller cannot
// change what the groups will deliver.
func stored(channel string, e *entry) *broker.StoredMessage {
	m := &broker.StoredMessage{ID: e.id, Channel: channel, Payload: slices.Clone(e.payload), Time: e.ts}
	if len(e.headers) > 0 {
		m.Headers = broker.CloneHeaders(e.headers, 0)
	}
	return m
}

// idLess orders the bus's decimal IDs numerically.
func idLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// held returns the messages channel holds (see the comment at the top of
// this file), once each, oldest first.
func (b *Bus) held(channel string) []*entry {
	b.mu.RLock()
	t := b.topics[channel]
	if t == nil {
		b.mu.RUnlock()
		return nil
	}
	out := slices.Clone(t.retained)
	groups := make([]*group, 0, len(t.groups))
	for _, g := range t.groups {
		groups = append(groups, g)
	}
	b.mu.RUnlock()
	seen := make(map[string]bool, len(out))
	for _, e := range out {
		seen[e.id] = true
	}
	for _, g := range groups {
		g.mu.Lock()
		for _, part := range [][]*entry{g.front, g.queue[g.head:]} {
			for _, e := range part {
				if !seen[e.id] {
					seen[e.id] = true
					out = append(out, e)
				}
			}
		}
		g.mu.Unlock()
	}
	sort.SliceStable(out, func(i, j int) bool { return idLess(out[i].id, out[j].id) })
	return out
}

// removeIDs removes the entries with these ids from what channel holds and
// returns how many of the ids it found.
func (b *Bus) removeIDs(channel string, ids []string) int {
	if len(ids) == 0 {
		return 0
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	found := map[string]bool{}
	keep := func(es []*entry) []*entry {
		out := es[:0]
		for _, e := range es {
			if want[e.id] {
				found[e.id] = true
				continue
			}
			out = append(out, e)
		}
		clear(es[len(out):])
		return out
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.topics[channel]
	if t == nil {
		return 0
	}
	t.retained = keep(t.retained)
	for _, g := range t.groups {
		g.mu.Lock()
		g.front = keep(g.front)
		g.queue = keep(g.queue[g.head:])
		g.head = 0
		g.mu.Unlock()
	}
	return len(found)
}

// tap is one follower of a channel (Tail).
type tap struct {
	mu     sync.Mutex
	queue  []*entry
	behind bool
	wake   chan struct{}
}

func (b *Bus) addTap(channel string, t *tap) {
	b.tapMu.Lock()
	defer b.tapMu.Unlock()
	if b.taps == nil {
		b.taps = map[string]map[*tap]struct{}{}
	}
	if b.taps[channel] == nil {
		b.taps[channel] = map[*tap]struct{}{}
	}
	b.taps[channel][t] = struct{}{}
	b.ntaps.Add(1)
}

func (b *Bus) removeTap(channel string, t *tap) {
	b.tapMu.Lock()
	defer b.tapMu.Unlock()
	delete(b.taps[channel], t)
	if len(b.taps[channel]) == 0 {
		delete(b.taps, channel)
	}
	b.ntaps.Add(-1)
}

// tapAll hands the entries the channel took (errs[i] == nil, or errs nil)
// to its followers.
func (b *Bus) tapAll(channel string, es []*entry, errs []error) {
	b.tapMu.Lock()
	defer b.tapMu.Unlock()
	for t := range b.taps[channel] {
		t.mu.Lock()
		for i, e := range es {
			if errs != nil && errs[i] != nil {
				continue
			}
			if len(t.queue) >= TailBuffer {
				t.behind = true
				break
			}
			t.queue = append(t.queue, e)
		}
		t.mu.Unlock()
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}
