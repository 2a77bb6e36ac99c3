package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

var (
	_ broker.DeadLetterStore = (*Adapter)(nil)
	_ broker.Tailer          = (*Adapter)(nil)
	_ broker.ChannelLister   = (*Adapter)(nil)
)

// RemovedSuffix names the topic that records the dead letters removed from
// a dead-letter topic: "<queue>.removed" (see RemoveDeadLetters).
const RemovedSuffix = ".removed"

// RemovedTopic is the topic of the removal markers of dead-letter topic
// queue.
func RemovedTopic(queue string) string { return queue + RemovedSuffix }

// HeaderHeadersCut is set on a stored message listed with only part of its
// headers: its record has more than broker.MaxHeaders of them, or more
// than broker.MaxHeadersSize bytes (which the consumers refuse as
// malformed). Its value says how many were left out.
const HeaderHeadersCut = "x-channels-headers-cut"

// toolFetchBytes bounds one fetch of a tooling read (a larger first record
// is still returned whole by the broker, up to its message.max.bytes).
const toolFetchBytes = 1 << 20

// toolFetchWait is the long poll of a Tail's fetches.
const toolFetchWait = 500 * time.Millisecond

// removedSet reads the removal markers of queue: the time (Unix
// milliseconds) of each record removed, by ID. A marker hides a record
// only when the times match: a topic deleted and created again under the
// same name does not lose its new records to the markers of the old one.
func (a *Adapter) removedSet(ctx context.Context, c *conn, queue string) (map[string]int64, error) {
	topic := RemovedTopic(queue)
	sp, ok, err := a.spans(ctx, c, topic)
	if err != nil || !ok {
		return nil, err
	}
	removed := map[string]int64{}
	for _, s := range sp {
		k := &cursor{topic: topic, span: s, next: s.first}
		for {
			r, err := k.head(ctx, c)
			if err != nil {
				return nil, err
			}
			if r == nil {
				break
			}
			if ms, err := strconv.ParseInt(string(r.value), 10, 64); err == nil && !r.null {
				removed[string(r.key)] = ms
			} else {
				delete(removed, string(r.key))
			}
			k.pop()
		}
	}
	return removed, nil
}

// isRemoved reports a record marked removed.
func isRemoved(removed map[string]int64, r *toolRecord) bool {
	ms, ok := removed[storedID(r.partition, r.offset)]
	return ok && ms == r.time.UnixMilli()
}

// BrowseDeadLetters calls fn with the records of the dead-letter topic,
// from the first offset of each partition to its end when the call
// started, oldest first across partitions (by toolRecord time, then
// partition), leaving out those RemoveDeadLetters removed. It reads with
// fetch requests of its own: no group, no commit. ID is
// "partition/offset", Time the toolRecord's time. Headers are read as the
// consumers read them; a toolRecord over their bounds (broker.MaxHeaders,
// broker.MaxHeadersSize) is listed with the headers that fit and
// HeaderHeadersCut.
func (a *Adapter) BrowseDeadLetters(ctx context.Context, queue string, fn func(*broker.StoredMessage) bool) error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	sp, ok, err := a.spans(ctx, c, queue)
	if err != nil || !ok {
		return err
	}
	removed, err := a.removedSet(ctx, c, queue)
	if err != nil {
		return err
	}
	cursors := make([]*cursor, 0, len(sp))
	for _, s := range sp {
		if s.end > s.first {
			cursors = append(cursors, &cursor{topic: queue, span: s, next: s.first})
		}
	}
	for {
		var best *cursor
		var bestRec *toolRecord
		for _, k := range cursors {
			r, err := k.head(ctx, c)
			if err != nil {
				return err
			}
			if r != nil && (bestRec == nil || r.time.Before(bestRec.time) ||
				(r.time.Equal(bestRec.time) && r.partition < bestRec.partition)) {
				best, bestRec = k, r
			}
		}
		if best == nil {
			return nil
		}
		best.pop()
		if isRemoved(removed, bestRec) {
			continue
		}
		if !fn(bestRec.stored(queue)) {
			return nil
		}
	}
}

// RemoveDeadLetters makes the given dead letters disappear from later
// browses. Kafka cannot delete one toolRecord: each removal is a marker
// toolRecord (key = the ID) written, acknowledged by every in-sync replica,
// to the compacted topic RemovedTopic(queue) (one partition, created at
// the first removal), which BrowseDeadLetters reads first. A marker is
// written only for an ID that names a toolRecord of the topic (a partition
// and an offset between its first and its end) not removed yet, and it is
// counted once acknowledged: a crash loses no removal that was reported.
// The records stay in the dead-letter topic until its retention drops
// them: a group consuming the dead-letter topic as a channel still
// receives them. The markers of records dropped by retention are deleted
// (tombstones) by the next removal. Cost: one marker record per removed
// dead letter, read by every browse.
func (a *Adapter) RemoveDeadLetters(ctx context.Context, queue string, ids ...string) (int, error) {
	c, err := a.conn()
	if err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	sp, ok, err := a.spans(ctx, c, queue)
	if err != nil || !ok {
		return 0, err
	}
	removed, err := a.removedSet(ctx, c, queue)
	if err != nil {
		return 0, err
	}
	ranges := map[int]span{}
	for _, s := range sp {
		ranges[s.partition] = s
	}
	var marks []*toolRecord
	seen := map[string]bool{}
	for _, id := range ids {
		p, o, ok := parseStoredID(id)
		if !ok {
			continue
		}
		s, found := ranges[p]
		canon := storedID(p, o)
		if !found || o < s.first || o >= s.end || seen[canon] {
			continue
		}
		seen[canon] = true
		recs, _, err := fetchRecords(ctx, c, queue, p, o, o+1, 0)
		if err != nil {
			return 0, err
		}
		if len(recs) == 0 || recs[0].offset != o || isRemoved(removed, &recs[0]) {
			continue
		}
		marks = append(marks, &recs[0])
	}
	// Markers of records that retention dropped are no longer needed.
	var stale []string
	for id := range removed {
		if p, o, ok := parseStoredID(id); ok {
			if s, found := ranges[p]; !found || o < s.first {
				stale = append(stale, id)
			}
		}
	}
	if len(marks) == 0 && len(stale) == 0 {
		return 0, nil
	}
	topic := RemovedTopic(queue)
	if err := a.ensureTopic(ctx, c, topic, TopicOptions{Partitions: 1, ReplicationFactor: DefaultReplicationFactor,
		Configs: map[string]string{"cleanup.policy": "compact"}}); err != nil {
		return 0, err
	}
	msgs := make([]kafkago.Message, 0, len(marks)+len(stale))
	for _, r := range marks {
		msgs = append(msgs, kafkago.Message{Key: []byte(storedID(r.partition, r.offset)),
			Value: []byte(strconv.FormatInt(r.time.UnixMilli(), 10))})
	}
	for _, id := range stale {
		msgs = append(msgs, kafkago.Message{Key: []byte(id)}) // a tombstone
	}
	opts := make([]SendOptions, len(msgs))
	for i := range opts {
		opts[i] = SendOptions{Key: msgs[i].Key, Acks: AcksAll}
	}
	n := 0
	var errs []error
	for i, err := range a.produce(ctx, c, topic, opts, msgs) {
		switch {
		case err != nil && i < len(marks):
			errs = append(errs, fmt.Errorf("channels/kafka: marking %s of %q removed: %w", msgs[i].Key, queue, err))
		case i < len(marks):
			n++
		}
	}
	return n, errors.Join(errs...)
}

// Tail calls fn with each toolRecord written to the channel's topic after Tail
// started (from the end of each partition then), until ctx ends or fn
// returns false, with fetch requests of its own: no group, no commit, so
// the groups get every message as before. Partitions added meanwhile are
// not read. A channel without a topic gets one, as a send creates it.
func (a *Adapter) Tail(ctx context.Context, channel string, fn func(*broker.StoredMessage) bool) error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	if err := a.ensureTopic(ctx, c, channel, a.chopts.withDefaults().Topic); err != nil {
		return err
	}
	sp, _, err := a.spans(ctx, c, channel)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	recs := make(chan *broker.StoredMessage, 64)
	errc := make(chan error, len(sp))
	var wg sync.WaitGroup
	// The readers stop when Tail returns (fn said stop, or a reader
	// failed): end their context before waiting for them.
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, s := range sp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := s.end
			for ctx.Err() == nil {
				batch, n, err := fetchRecords(ctx, c, channel, s.partition, next, -1, toolFetchWait)
				if err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				next = n
				for i := range batch {
					select {
					case recs <- batch[i].stored(channel):
					case <-ctx.Done():
						return
					}
				}
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case m := <-recs:
			if !fn(m) {
				return nil
			}
		}
	}
}

// Channels lists the topics whose name starts with prefix (Kafka's
// internal topics and the removal markers of dead-letter topics left
// out), each with Messages = the records it holds (the end less the first
// offset of each partition) and the consumer groups named
// "<group>:<topic>" (as the adapter and @moleculer/channels name them)
// with their Lag. Groups are listed on every broker of the cluster.
func (a *Adapter) Channels(ctx context.Context, prefix string) ([]broker.ChannelInfo, error) {
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("channels/kafka: listing topics: %w", err)
	}
	all := map[string]bool{}
	for _, t := range md.Topics {
		if t.Error == nil {
			all[t.Name] = true
		}
	}
	var names []string
	for name := range all {
		if !strings.HasPrefix(name, prefix) || strings.HasPrefix(name, "__") {
			continue
		}
		if base, ok := strings.CutSuffix(name, RemovedSuffix); ok && all[base] {
			continue
		}
		names = append(names, name)
	}
	sort.Strings(names)
	groups := map[string][]string{}
	if len(names) > 0 {
		listed := map[string]bool{}
		for _, name := range names {
			listed[name] = true
		}
		for _, b := range md.Brokers {
			addr := kafkago.TCP(net.JoinHostPort(b.Host, strconv.Itoa(b.Port)))
			res, err := c.client.ListGroups(ctx, &kafkago.ListGroupsRequest{Addr: addr})
			if err == nil {
				err = res.Error
			}
			if err != nil {
				return nil, fmt.Errorf("channels/kafka: listing the groups of broker %d: %w", b.ID, err)
			}
			for _, g := range res.Groups {
				i := strings.LastIndexByte(g.GroupID, ':')
				if i < 0 || !listed[g.GroupID[i+1:]] {
					continue
				}
				groups[g.GroupID[i+1:]] = append(groups[g.GroupID[i+1:]], g.GroupID[:i])
			}
		}
	}
	out := make([]broker.ChannelInfo, 0, len(names))
	for _, name := range names {
		sp, ok, err := a.spans(ctx, c, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // deleted meanwhile
		}
		info := broker.ChannelInfo{Name: name}
		for _, s := range sp {
			info.Messages += max(s.end-s.first, 0)
		}
		gs := groups[name]
		sort.Strings(gs)
		for _, g := range gs {
			lag, err := a.Lag(ctx, name, g)
			if err != nil {
				return nil, err
			}
			info.Groups = append(info.Groups, broker.GroupInfo{Name: g, GroupLag: lag})
		}
		out = append(out, info)
	}
	return out, nil
}
