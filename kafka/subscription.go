package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// subscription consumes one channel for one group: it is a member of the
// group "<group>:<channel>"; for each generation of the group it reads the
// partitions assigned to it (partition.go) and commits their processed
// offsets every CommitInterval.
type subscription struct {
	*broker.Consumer
	a     *Adapter
	c     *conn
	ch    *broker.Channel
	opts  ChannelOptions
	group string
	cfg   kafkago.ConsumerGroupConfig
	log   *slog.Logger

	fetchCtx  context.Context // cancelled by StopFetching
	stopFetch context.CancelFunc

	// maxBackoff is the longest backoff of the channel's retry policy: no
	// retry copy of ours waits longer (delivery.go: wait).
	maxBackoff time.Duration
	// forged counts the copies whose not-before time was not honoured.
	forged atomic.Int64
	// heldBytes are the bytes of the messages read and held without a
	// slot (waiting in a lane or for a backoff) by the partitions;
	// readAhead bounds them.
	heldBytes atomic.Int64
	readAhead int64

	mu    sync.Mutex
	cg    *kafkago.ConsumerGroup
	gen   *generation         // the current generation, nil before the first
	first *kafkago.Generation // the generation joined by Subscribe, run by Start
	// joined is closed once the first assignment in a busy group was
	// awaited (at once in a new or empty group): Start reads from then on.
	joined chan struct{}
	// drainCtx bounds the drain, once one began: the hand-overs of a
	// rebalance during it wait for the running handlers within it.
	drainCtx context.Context
}

// draining returns the drain's context, nil before a drain.
func (s *subscription) draining() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drainCtx
}

func newSubscription(a *Adapter, c *conn, ch *broker.Channel, opts ChannelOptions, group string) (*subscription, error) {
	s := &subscription{Consumer: broker.NewConsumer(ch), a: a, c: c, ch: ch, opts: opts, group: group,
		log: ch.Logger, maxBackoff: longestBackoff(ch.Retry), readAhead: int64(opts.ReadAheadBytes), joined: make(chan struct{})}
	s.cfg = kafkago.ConsumerGroupConfig{
		ID:                group,
		Brokers:           a.brokers,
		Dialer:            a.newDialer(),
		Topics:            []string{ch.Name},
		GroupBalancers:    []kafkago.GroupBalancer{kafkago.RoundRobinGroupBalancer{}, kafkago.RangeGroupBalancer{}},
		HeartbeatInterval: opts.HeartbeatInterval,
		SessionTimeout:    opts.SessionTimeout,
		RebalanceTimeout:  opts.RebalanceTimeout,
		JoinGroupBackoff:  time.Second,
		// A partition without a committed offset (added to the topic after
		// the group formed) is read from its beginning: nothing is skipped.
		// New groups get their start offsets when subscribed (pinStart).
		StartOffset:            kafkago.FirstOffset,
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		ErrorLogger: kafkago.LoggerFunc(func(f string, args ...any) {
			ch.Logger.Debug("channels/kafka: group: "+broker.Redact(fmt.Sprintf(f, args...)), "channel", ch.Name, "group", ch.Group)
		}),
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: kafka group %q: %v", broker.ErrInvalidOption, group, err)
	}
	s.fetchCtx, s.stopFetch = context.WithCancel(context.Background())
	return s, nil
}

// wakeReaders wakes the partitions waiting for read-ahead room.
func (s *subscription) wakeReaders() {
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g == nil {
		return
	}
	for _, p := range g.parts {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// deadLetterTopic shapes the dead-letter topic when it is created.
func (s *subscription) deadLetterTopic() TopicOptions { return s.opts.DeadLetterTopic }

// longestBackoff is the longest delay the policy gives a retry.
func longestBackoff(p broker.RetryPolicy) time.Duration {
	if p.Backoff == nil {
		return 0
	}
	var longest time.Duration
	for attempt := 1; attempt <= min(p.MaxRetries, 1000); attempt++ {
		longest = max(longest, p.Backoff.Delay(attempt))
	}
	return longest
}

// join makes this member join the group. In a group that has members, its
// first assignment is awaited in the background (bounded by the rebalance
// timeout, not by ctx: the channels of a process join busy groups at the
// same time, none taking the others' connect time), and Start reads from
// it, so that members subscribed one after the other share the partitions
// before the first message is read. A new or empty group is joined by
// Start (Kafka holds its first generation for
// group.initial.rebalance.delay.ms, 3 s by default): the channels of a
// process join at the same time, and Start reads from the first
// generation on.
func (s *subscription) join(ctx context.Context) error {
	busy := s.groupHasMembers(ctx)
	cg, err := kafkago.NewConsumerGroup(s.cfg)
	if err != nil {
		return fmt.Errorf("%w: kafka group %q: %v", broker.ErrInvalidOption, s.group, err)
	}
	s.mu.Lock()
	s.cg = cg
	s.mu.Unlock()
	if !busy {
		close(s.joined)
		return nil
	}
	go s.firstAssignment(cg)
	return nil
}

// firstAssignment waits for the member's first generation in a busy group,
// for Start, at most RebalanceTimeout (or until the subscription stops);
// then closes s.joined.
func (s *subscription) firstAssignment(cg *kafkago.ConsumerGroup) {
	defer close(s.joined)
	wctx, cancel := context.WithTimeout(s.fetchCtx, s.opts.RebalanceTimeout)
	defer cancel()
	// Errors while the group forms (a rebalance in progress, a coordinator
	// moving) are retried by the group itself; Next reports them and goes on.
	var gen *kafkago.Generation
	var last error
	var err error
	for gen == nil && wctx.Err() == nil {
		if gen, err = cg.Next(wctx); err != nil && wctx.Err() == nil {
			last = err
			s.log.Debug("channels/kafka: joining the group", "channel", s.ch.Name, "group", s.group, "error", broker.Redact(err.Error()))
			if errors.Is(err, kafkago.ErrGroupClosed) {
				break
			}
		}
	}
	s.mu.Lock()
	s.first = gen
	s.mu.Unlock()
	if gen == nil && s.fetchCtx.Err() == nil {
		msg := "<nil>"
		if last != nil {
			msg = broker.Redact(last.Error())
		}
		s.log.Warn("channels/kafka: the group did not rebalance within the rebalance timeout; joining goes on",
			"channel", s.ch.Name, "group", s.group, "last_error", msg)
	}
}

// groupHasMembers tells whether the group has members (false when it
// cannot be told).
func (s *subscription) groupHasMembers(ctx context.Context) bool {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	res, err := s.c.client.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{s.group}})
	if err != nil {
		return false
	}
	for _, g := range res.Groups {
		if g.GroupID == s.group && g.Error == nil && len(g.Members) > 0 {
			return true
		}
	}
	return false
}

// Start begins reading the assigned partitions; it runs once.
func (s *subscription) Start() { s.Consumer.Start(s.groupLoop) }

// Drain stops reading, waits for the running handlers (bounded by ctx),
// commits what they processed and leaves the group, so that the other
// members take the partitions over at once.
func (s *subscription) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.drainCtx == nil {
		s.drainCtx = ctx
	}
	s.mu.Unlock()
	return s.Consumer.Drain(ctx, broker.DrainHooks{
		StopFetching: func(context.Context) { s.stopFetch() },
		Finish:       s.finish,
	})
}

// finish commits what the drained handlers processed while the generation
// is still alive, then leaves the group, which hands the partitions over
// without waiting for the session timeout. Both are bounded by ctx.
func (s *subscription) finish(ctx context.Context, timedOut bool) error {
	defer s.a.subs.Remove(s)
	s.stopFetch()
	s.mu.Lock()
	g, cg := s.gen, s.cg
	s.cg, s.gen, s.first = nil, nil, nil
	s.mu.Unlock()
	if cg == nil {
		return nil
	}
	err := broker.Bounded(ctx, "kafka final commit and group leave", func() error {
		if g != nil {
			for _, p := range g.all() {
				p.handOver(ctx, p.close())
			}
			meta := func(*partition) string { return metaClean }
			if timedOut {
				// A message may still run: the next owner must be careful.
				meta = (*partition).uncleanMeta
			}
			g.commit(g.all(), meta, true)
		}
		if err := cg.Close(); err != nil && !errors.Is(err, kafkago.ErrGroupClosed) {
			s.log.Warn("channels/kafka: leaving the group failed; its partitions move after the session timeout",
				"channel", s.ch.Name, "group", s.group, "error", broker.Redact(err.Error()))
		}
		return nil
	})
	if err != nil {
		// Nothing is lost: what was not committed is delivered again.
		s.log.Warn("channels/kafka: the last commit and leaving the group go on after the drain deadline",
			"channel", s.ch.Name, "group", s.group)
	}
	return err
}

// groupLoop takes each generation of the group and starts reading the
// partitions it assigns to this member.
func (s *subscription) groupLoop() {
	select {
	case <-s.joined:
	case <-s.fetchCtx.Done():
		return
	}
	var retry broker.Reconnect
	for {
		s.mu.Lock()
		if s.cg == nil && !s.IsStopping() {
			cg, err := kafkago.NewConsumerGroup(s.cfg)
			if err != nil {
				s.mu.Unlock()
				s.log.Error("channels/kafka: cannot create the consumer group", "channel", s.ch.Name, "group", s.group, "error", err)
				return
			}
			s.cg = cg
		}
		cg, gen := s.cg, s.first
		s.first = nil
		s.mu.Unlock()
		if cg == nil {
			return
		}
		var err error
		if gen == nil {
			gen, err = cg.Next(s.fetchCtx)
		}
		if s.IsStopping() {
			return
		}
		if err != nil {
			s.log.Warn("channels/kafka: joining the group failed, retrying", "channel", s.ch.Name, "group", s.group,
				"error", broker.Redact(err.Error()), "in", retry.Next())
			if errors.Is(err, kafkago.ErrGroupClosed) {
				s.mu.Lock()
				s.cg = nil
				s.mu.Unlock()
			}
			if _, ok := retry.Failed(s.Stopping()); !ok {
				return
			}
			continue
		}
		retry.Succeeded()
		s.runGeneration(gen)
	}
}

// runGeneration starts a routine per assigned partition and the commit
// routine. They end with the generation (a rebalance, a lost coordinator,
// the group left at the end of a drain); the group moves on to the next generation only once
// they all returned, so a partition is never read by two members of ours
// at once.
func (s *subscription) runGeneration(kg *kafkago.Generation) {
	g := &generation{s: s, kg: kg, parts: map[int]*partition{}, handedOver: make(chan struct{})}
	for _, pa := range kg.Assignments[s.ch.Name] {
		g.parts[pa.ID] = newPartition(g, pa.ID, pa.Offset)
	}
	g.left.Store(int32(len(g.parts)))
	if len(g.parts) == 0 {
		close(g.handedOver)
	}
	s.log.Debug("channels/kafka: partitions assigned", "channel", s.ch.Name, "group", s.group,
		"generation", kg.ID, "partitions", len(g.parts))
	g.handoverState()
	s.mu.Lock()
	s.gen = g
	s.mu.Unlock()
	for _, p := range g.parts {
		kg.Start(p.run)
	}
	kg.Start(g.commitLoop)
	kg.Start(g.handoverBeat)
}

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
// to 3/4 of RebalanceTimeout for their running messages: a member silent
// for SessionTimeout meanwhile would be expelled, its partitions given to
// another member while their messages still run here, and its last commits
// refused. The coordinator answers these heartbeats with
// REBALANCE_IN_PROGRESS and counts them as alive.
func (g *generation) handoverBeat(ctx context.Context) {
	<-ctx.Done()
	broker.Tick(g.s.opts.HeartbeatInterval, g.handedOver, g.heartbeat)
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
// or all of them with force (a handover), with each partition's meta. A
// run count committed for a message not settled yet is kept, whatever
// meta says: a clean hand-over does not erase a pending crash count.
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
			m := p.pendingRun()
			if m == "" {
				m = meta(p)
			}
			commits = append(commits, kafkago.OffsetCommit{Partition: p.id, Offset: pos, Metadata: m})
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

// pending counts the messages of this member read and not settled.
func (s *subscription) pending() int64 {
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	if g == nil {
		return 0
	}
	var n int64
	for _, p := range g.parts {
		p.mu.Lock()
		for _, d := range p.done[p.head:] {
			if !d {
				n++
			}
		}
		p.mu.Unlock()
	}
	return n
}
