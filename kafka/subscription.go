package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// subscription consumes one channel for one group: it is a member of the
// group "<group>:<channel>"; for each generation of the group it reads the
// partitions assigned to it (partition.go) and commits their processed
// offsets every CommitInterval.
type subscription struct {
	*kit.Consumer
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
	// drainCtx bounds the drain, once one began.
	drainCtx context.Context
	// drainExpired is closed when the drain's context ends: the hand-overs
	// of a rebalance stop waiting for the running handlers then.
	drainExpired chan struct{}
}

func newSubscription(a *Adapter, c *conn, ch *broker.Channel, opts ChannelOptions, group string) (*subscription, error) {
	s := &subscription{Consumer: kit.NewConsumer(ch), a: a, c: c, ch: ch, opts: opts, group: group,
		log: ch.Logger, maxBackoff: longestBackoff(ch.Retry), readAhead: int64(opts.ReadAheadBytes), joined: make(chan struct{}), drainExpired: make(chan struct{})}
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
		return nil, fmt.Errorf("%w: kafka group %q: %w", broker.ErrInvalidOption, group, err)
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
		return fmt.Errorf("%w: kafka group %q: %w", broker.ErrInvalidOption, s.group, err)
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
		context.AfterFunc(ctx, func() { close(s.drainExpired) })
	}
	s.mu.Unlock()
	return s.Consumer.Drain(ctx, kit.DrainHooks{
		StopFetching: func(context.Context) { s.stopFetch() },
		Finish:       s.finish,
	})
}

// finish commits what the drained handlers processed while the generation
// is still alive, then leaves the group, which hands the partitions over
// without waiting for the session timeout. Both are bounded by ctx.
func (s *subscription) finish(ctx context.Context, timedOut bool) error {
	defer s.a.life.Subs.Remove(s)
	s.stopFetch()
	s.mu.Lock()
	g, cg := s.gen, s.cg
	s.cg, s.gen, s.first = nil, nil, nil
	s.mu.Unlock()
	if cg == nil {
		return nil
	}
	err := kit.Bounded(ctx, "kafka final commit and group leave", func() error {
		if g != nil {
			for _, p := range g.all() {
				p.handOver(ctx, p.close())
			}
			meta := (*partition).cleanMeta
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
	var retry kit.Reconnect
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
			} else {
				s.askNextBroker(cg)
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

// askNextBroker replaces the group cg, whose join failed, by one that asks
// the next bootstrap broker first for the group's coordinator: kafka-go
// asks the first broker of the list that answers, and a broker cut off
// from the rest of the cluster goes on naming a coordinator that can no
// longer serve the group (itself, whose writes to the offsets topic
// fail). The failed group is closed in the background.
func (s *subscription) askNextBroker(cg *kafkago.ConsumerGroup) {
	s.mu.Lock()
	if s.cg != cg || len(s.cfg.Brokers) < 2 {
		s.mu.Unlock()
		return
	}
	s.cfg.Brokers = rotate(s.cfg.Brokers)
	s.cg = nil
	s.mu.Unlock()
	go func() { _ = cg.Close() }()
}

// rotate returns a copy of list with its first element moved to the end.
func rotate(list []string) []string {
	out := make([]string, 0, len(list))
	return append(append(out, list[1:]...), list[0])
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
