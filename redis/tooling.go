package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

var (
	_ broker.DeadLetterStore = (*Adapter)(nil)
	_ broker.MessageRemover  = (*Adapter)(nil)
	_ broker.Tailer          = (*Adapter)(nil)
	_ broker.ChannelLister   = (*Adapter)(nil)
)

// Bounds of the operations tooling.
const (
	// BrowsePage is the number of entries one XRANGE of BrowseDeadLetters
	// reads (the entries held in memory at a time).
	BrowsePage = 100
	// TailBlock is the BLOCK time of one XREAD of Tail: a Tail whose
	// context ends without a deadline returns within it.
	TailBlock = time.Second
	// TailPage is the number of entries one XREAD of Tail reads.
	TailPage = 100
	// removeBatch is the number of IDs one XDEL of RemoveDeadLetters sends.
	removeBatch = 500
	// listPipeline is the number of streams Channels describes per
	// pipeline (XLEN and XINFO GROUPS of each).
	listPipeline = 100
	// scanCount is the COUNT hint of Channels' SCAN.
	scanCount = 1000
)

// tooling returns the connected client and the serializer of the headers.
func (a *Adapter) tooling() (goredis.UniversalClient, broker.Serializer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client == nil {
		if err := a.state.Check(); err != nil {
			return nil, nil, err
		}
		return nil, nil, broker.ErrClosed
	}
	return a.client, a.env.Serializer, nil
}

// BrowseDeadLetters reads the dead-letter stream queue with XRANGE, in
// pages of BrowsePage entries, from its first entry to the last one
// present when the call started. It reads no group's pending list and
// changes nothing. An entry is decoded as a consumer decodes it; one
// without a payload field has a nil Payload, one whose headers do not
// decode (malformed, over MaxHeadersSize or MaxHeaders) has nil Headers.
func (a *Adapter) BrowseDeadLetters(ctx context.Context, queue string, fn func(*broker.StoredMessage) bool) error {
	c, ser, err := a.tooling()
	if err != nil {
		return err
	}
	last, err := c.XRevRangeN(ctx, queue, "+", "-", 1).Result()
	if err != nil {
		return fmt.Errorf("channels/redis: browse %q: %w", queue, err)
	}
	if len(last) == 0 {
		return nil // no such stream, or empty
	}
	end := last[0].ID
	start := "-"
	for {
		page, err := c.XRangeN(ctx, queue, start, end, BrowsePage).Result()
		if err != nil {
			return fmt.Errorf("channels/redis: browse %q: %w", queue, err)
		}
		for _, m := range page {
			if !fn(storedMessage(ser, queue, m)) {
				return nil
			}
		}
		if len(page) < BrowsePage || page[len(page)-1].ID == end {
			return nil
		}
		start = "(" + page[len(page)-1].ID // exclusive (Redis 6.2)
	}
}

// storedMessage decodes one entry as the consumer does (subscription.decode),
// keeping what decodes.
func storedMessage(ser broker.Serializer, stream string, m goredis.XMessage) *broker.StoredMessage {
	sm := &broker.StoredMessage{ID: m.ID, Channel: stream, Time: entryTime(m.ID)}
	if p, ok := m.Values[FieldPayload].(string); ok {
		sm.Payload = []byte(p)
	} else {
		sm.DecodeError = "the entry has no " + FieldPayload + " field"
	}
	if hv, ok := m.Values[FieldHeaders]; ok {
		hs, _ := hv.(string)
		if h, err := broker.DecodeHeadersString(ser, hs); err == nil {
			sm.Headers = h
		} else {
			sm.DecodeError = err.Error()
		}
	}
	return sm
}

// entryTime is the time of a stream entry ID (its milliseconds part).
func entryTime(id string) time.Time {
	ms, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

// validID reports whether id is a complete stream entry ID
// (<milliseconds>-<sequence>).
func validID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil
}

// RemoveDeadLetters deletes the entries with these IDs from the
// dead-letter stream queue (XDEL, removeBatch IDs per command) and returns
// how many it deleted. An ID that is not a stream entry ID
// (<milliseconds>-<sequence>) is not found.
func (a *Adapter) RemoveDeadLetters(ctx context.Context, queue string, ids ...string) (int, error) {
	c, _, err := a.tooling()
	if err != nil {
		return 0, err
	}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if validID(id) {
			valid = append(valid, id)
		}
	}
	removed := 0
	for chunk := range slices.Chunk(valid, removeBatch) {
		n, err := c.XDel(ctx, queue, chunk...).Result()
		removed += int(n)
		if err != nil {
			return removed, fmt.Errorf("channels/redis: remove dead letters from %q: %w", queue, err)
		}
	}
	return removed, nil
}

// RemoveMessage deletes the entry id from the stream channel (XDEL): it is
// gone for every group that has not read it yet. ErrNotFound when the
// stream holds no such entry.
func (a *Adapter) RemoveMessage(ctx context.Context, channel, id string) error {
	c, _, err := a.tooling()
	if err != nil {
		return err
	}
	if !validID(id) {
		return fmt.Errorf("%w: channels/redis: %q is not a stream entry ID", broker.ErrNotFound, id)
	}
	n, err := c.XDel(ctx, channel, id).Result()
	if err != nil {
		return fmt.Errorf("channels/redis: remove %s from %q: %w", id, channel, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: channels/redis: no entry %s in %q", broker.ErrNotFound, id, channel)
	}
	return nil
}

// Tail follows the stream channel with XREAD (no group: nothing is
// consumed or acknowledged) from the last entry present when it started,
// so it sees the entries added after, including those of a stream that
// does not exist yet. Each XREAD blocks at most TailBlock: a context
// without a deadline that ends is seen within that time.
func (a *Adapter) Tail(ctx context.Context, channel string, fn func(*broker.StoredMessage) bool) error {
	c, ser, err := a.tooling()
	if err != nil {
		return err
	}
	last, err := c.XRevRangeN(ctx, channel, "+", "-", 1).Result()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("channels/redis: tail %q: %w", channel, err)
	}
	from := "0-0"
	if len(last) > 0 {
		from = last[0].ID
	}
	for ctx.Err() == nil {
		res, err := c.XRead(ctx, &goredis.XReadArgs{Streams: []string{channel, from}, Count: TailPage, Block: TailBlock}).Result()
		if errors.Is(err, goredis.Nil) {
			continue // the block ended with nothing new
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("channels/redis: tail %q: %w", channel, err)
		}
		for _, s := range res {
			for _, m := range s.Messages {
				from = m.ID
				if !fn(storedMessage(ser, channel, m)) {
					return nil
				}
			}
		}
	}
	return nil
}

// Channels lists the streams whose name starts with prefix (SCAN ... TYPE
// stream on every master of a Cluster), with their length (XLEN) and
// groups (XINFO GROUPS: the group's lag and pending count; the lag is -1
// when Redis cannot tell it, always before Redis 7). Every stream is a
// channel to it: dead-letter queues included. A stream deleted during the
// listing is left out.
func (a *Adapter) Channels(ctx context.Context, prefix string) ([]broker.ChannelInfo, error) {
	c, _, err := a.tooling()
	if err != nil {
		return nil, err
	}
	names, err := scanStreams(ctx, c, globEscape(prefix)+"*")
	if err != nil {
		return nil, fmt.Errorf("channels/redis: list streams: %w", err)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return []broker.ChannelInfo{}, nil
	}
	lagKnown, err := reportsLag(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("channels/redis: list streams: %w", err)
	}
	out := make([]broker.ChannelInfo, 0, len(names))
	for chunk := range slices.Chunk(names, listPipeline) {
		pipe := c.Pipeline()
		lens := make([]*goredis.IntCmd, len(chunk))
		groups := make([]*goredis.XInfoGroupsCmd, len(chunk))
		for i, name := range chunk {
			lens[i] = pipe.XLen(ctx, name)
			groups[i] = pipe.XInfoGroups(ctx, name)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own reply or error
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i, name := range chunk {
			gs, err := groups[i].Result()
			if err != nil {
				if isNoSuchKey(err) {
					continue // deleted meanwhile
				}
				return nil, fmt.Errorf("channels/redis: groups of %q: %w", name, err)
			}
			ci := broker.ChannelInfo{Name: name, Messages: lens[i].Val(), Groups: make([]broker.GroupInfo, 0, len(gs))}
			for _, g := range gs {
				lag := g.Lag
				if !lagKnown {
					lag = -1
				}
				ci.Groups = append(ci.Groups, broker.GroupInfo{Name: g.Name, GroupLag: broker.GroupLag{Lag: lag, Pending: g.Pending}})
			}
			slices.SortFunc(ci.Groups, func(x, y broker.GroupInfo) int { return strings.Compare(x.Name, y.Name) })
			out = append(out, ci)
		}
	}
	return out, nil
}

func isNoSuchKey(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "no such key")
}

// scanStreams returns the stream keys matching pattern, from every master
// of a Cluster.
func scanStreams(ctx context.Context, c goredis.UniversalClient, pattern string) ([]string, error) {
	var (
		mu    sync.Mutex
		names []string
	)
	scan := func(ctx context.Context, n goredis.Cmdable) error {
		iter := n.ScanType(ctx, 0, pattern, scanCount, "stream").Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			names = append(names, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := c.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error { return scan(ctx, n) })
	} else {
		err = scan(ctx, c)
	}
	return names, err
}

// reportsLag reports whether the server's XINFO GROUPS tells a group's lag
// (Redis 7 and later).
func reportsLag(ctx context.Context, c goredis.UniversalClient) (bool, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			major, _, _ := strings.Cut(v, ".")
			n, err := strconv.Atoi(major)
			return err == nil && n >= 7, nil
		}
	}
	return false, nil
}

// globEscape escapes the characters SCAN MATCH patterns give a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
