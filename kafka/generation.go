package kafka

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// generation is this member's share of one generation of the group.
type generation struct {
	s     *subscription
	kg    *kafkago.Generation
	parts map[int]*partition
	// commitMu serializes the commits of the generation.
	commitMu sync.Mutex
	// left counts the partitions not handed over yet; the last one closes
	// handedOver.
	left       atomic.Int32
	handedOver chan struct{}
}

// handedOff records that a partition's routine is done: its running
// messages finished (or the wait gave up) and its position was committed.
func (g *generation) handedOff() {
	if g.left.Add(-1) == 0 {
		close(g.handedOver)
	}
}

// handoverBeat keeps this member in the group from the end of the
// generation (a rebalance began) until its partitions are handed over.
// kafka-go's heartbeat ends with the generation, and the partitions wait up
// to half of RebalanceTimeout for their running messages: a member silent
// for SessionTimeout meanwhile would be expelled, its partitions given to
// another member while their messages still run here, and its last commits
// refused. The coordinator answers these heartbeats with
// REBALANCE_IN_PROGRESS and counts them as alive.
func (g *generation) handoverBeat(ctx context.Context) {
	<-ctx.Done()
	kit.Tick(g.s.opts.HeartbeatInterval, g.handedOver, g.heartbeat)
}

// heartbeat sends one heartbeat as this member of the generation.
func (g *generation) heartbeat() {
	ctx, cancel := context.WithTimeout(context.Background(), g.s.opts.HeartbeatInterval)
	defer cancel()
	res, err := g.s.c.client.Heartbeat(ctx, &kafkago.HeartbeatRequest{GroupID: g.s.group,
		GenerationID: g.kg.ID, MemberID: g.kg.MemberID})
	if err == nil {
		err = res.Error
	}
	if err != nil && !errors.Is(err, kafkago.RebalanceInProgress) {
		g.s.log.Debug("channels/kafka: heartbeat while handing partitions over", "channel", g.s.ch.Name,
			"group", g.s.group, "error", broker.Redact(err.Error()))
	}
}

// commitLoop commits, every CommitInterval, the partitions whose position
// moved, in one request.
func (g *generation) commitLoop(ctx context.Context) {
	t := time.NewTicker(g.s.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.commit(g.all(), (*partition).uncleanMeta, false)
		}
	}
}

func (g *generation) all() []*partition {
	ps := make([]*partition, 0, len(g.parts))
	for _, p := range g.parts {
		ps = append(ps, p)
	}
	return ps
}

// Commit metadata. Every commit says whether the member that made it was
// handing its partitions over (clean) or still running them (live); a
// commit made before a message runs alone says how many runs of the
// message at that offset were started (run:<n>). A member that finds a
// partition committed live or run:<n> knows its previous owner died with
// messages running, and runs the first messages one at a time (careful
// mode), counting the runs of each, so that a message that kills its
// consumer is found and given up after MaxDeliveries.
const (
	metaLive  = "live"
	metaClean = "clean"
	metaRun   = "run:"
)

// commit commits the processed position of ps: the partitions that moved,
// or all of them with force (a handover), with each partition's meta
// (uncleanMeta keeps a run count committed for a message not settled yet;
// cleanMeta keeps what a careful partition inherited and has not run).
func (g *generation) commit(ps []*partition, meta func(*partition) string, force bool) {
	g.commitWithin(context.Background(), ps, meta, force)
}

// commitWithin is commit bounded by ctx.
func (g *generation) commitWithin(ctx context.Context, ps []*partition, meta func(*partition) string, force bool) {
	g.commitMu.Lock()
	defer g.commitMu.Unlock()
	var commits []kafkago.OffsetCommit
	for _, p := range ps {
		if pos, moved := p.position(); (moved || force) && pos >= 0 {
			commits = append(commits, kafkago.OffsetCommit{Partition: p.id, Offset: pos, Metadata: meta(p)})
		}
	}
	if len(commits) == 0 {
		return
	}
	if err := g.commitOffsets(ctx, commits); err != nil {
		g.s.log.Warn("channels/kafka: committing offsets failed; the messages processed since the last commit will be delivered again",
			"channel", g.s.ch.Name, "group", g.s.group, "error", broker.Redact(err.Error()))
		return
	}
	for _, c := range commits {
		g.parts[c.Partition].committedAt(c.Offset)
	}
}

// commitOffsets commits as this member of the generation, bounded by ctx
// and DefaultOpTimeout.
func (g *generation) commitOffsets(ctx context.Context, commits []kafkago.OffsetCommit) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
	defer cancel()
	res, err := g.s.c.client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: g.s.group,
		GenerationID: int(g.kg.ID), MemberID: g.kg.MemberID, Topics: map[string][]kafkago.OffsetCommit{g.s.ch.Name: commits}})
	if err != nil {
		return err
	}
	for _, p := range res.Topics[g.s.ch.Name] {
		if p.Error != nil {
			return p.Error
		}
	}
	return nil
}

// handoverState reads the commit metadata of the assigned partitions and
// puts the partitions whose previous owner died into careful mode.
func (g *generation) handoverState() {
	ids := make([]int, 0, len(g.parts))
	for id := range g.parts {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
	defer cancel()
	var res *kafkago.OffsetFetchResponse
	err := untilSettled(ctx, func() error {
		var err error
		if res, err = g.s.c.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: g.s.group,
			Topics: map[string][]int{g.s.ch.Name: ids}}); err == nil {
			err = res.Error
		}
		return err
	})
	if err != nil {
		g.s.log.Warn("channels/kafka: reading the commit metadata failed; deliveries are not counted in this generation",
			"channel", g.s.ch.Name, "group", g.s.group, "error", broker.Redact(err.Error()))
		return
	}
	var live []*partition
	for _, fp := range res.Topics[g.s.ch.Name] {
		p := g.parts[fp.Partition]
		if p == nil {
			continue
		}
		if fp.Error != nil || fp.CommittedOffset != p.pos {
			live = append(live, p)
			continue
		}
		switch runs, off, ok := parseRun(fp.Metadata, p.pos); {
		case fp.Metadata == metaLive:
			p.beCareful(0, p.pos)
			live = append(live, p)
		case ok:
			// The count stays committed until the message runs again
			// (countRun): a crash before that must not lose it.
			p.beCareful(runs, off)
		default:
			live = append(live, p)
		}
	}
	// From now on a crash of this member leaves its partitions live.
	g.commit(live, func(*partition) string { return metaLive }, true)
}

// parseRun reads the run count of commit metadata committed at pos:
// run:<n> (the message at pos) or run:<n>:<offset>.
func parseRun(meta string, pos int64) (runs int, off int64, ok bool) {
	rest, found := strings.CutPrefix(meta, metaRun)
	if !found {
		return 0, 0, false
	}
	n, o, hasOff := strings.Cut(rest, ":")
	runs, err := strconv.Atoi(n)
	if err != nil || runs <= 0 {
		return 0, 0, false
	}
	off = pos
	if hasOff {
		if off, err = strconv.ParseInt(o, 10, 64); err != nil || off < pos {
			return 0, 0, false
		}
	}
	return min(runs, 1<<20), off, true
}
