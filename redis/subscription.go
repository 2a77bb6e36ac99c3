package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// held is a message this consumer owns: running, read ahead and waiting
// for a slot, or waiting for a retry whose backoff is longer than
// MinIdleTime.
type held struct {
	attempt int
	timer   *time.Timer // pending retry, nil while running or waiting for a slot
	due     time.Time   // when the pending retry is due
}

// subscription consumes one channel for one group. Three goroutines:
// fetch (XREADGROUP for new messages), maintain (heartbeat of held
// messages, claim of dead consumers' messages, dead-lettering of messages
// over their limit: one loop, so these decisions cannot race) and ack
// (batched XACK). A failed message is handed back to the group for its
// retry; only a backoff longer than MinIdleTime waits on a timer here.
type subscription struct {
	a      *Adapter
	c      goredis.UniversalClient
	reader goredis.UniversalClient
	owned  bool // reader is a dedicated client
	ser    broker.Serializer
	ch     *broker.Channel
	opts   ChannelOptions
	fl     *broker.Inflight
	log    interface {
		Warn(string, ...any)
		Error(string, ...any)
	}

	hctx   context.Context // handlers' context, cancelled when a drain times out
	cancel context.CancelFunc
	stop   chan struct{} // closed when draining starts

	mu   sync.Mutex
	held map[string]*held
	// beatMu orders a heartbeat against the hand-backs: a heartbeat whose
	// snapshot still had a message must not reset its idle time after the
	// message was handed back for a retry (that would delay the retry by
	// MinIdleTime).
	beatMu sync.Mutex

	// readerConns maps the server-side ids of the reader's connections to
	// the server address they reached (CLIENT INFO laddr).
	readerMu    sync.Mutex
	readerConns map[int64]string

	acks      chan string
	ackMu     sync.RWMutex
	acksShut  bool
	loops     sync.WaitGroup // fetch and maintain
	ackDone   chan struct{}
	started   atomic.Bool
	drainOnce sync.Once
	drainErr  error
}

func newSubscription(a *Adapter, c goredis.UniversalClient, ser broker.Serializer, ch *broker.Channel, opts ChannelOptions) *subscription {
	hctx, cancel := context.WithCancel(context.Background())
	return &subscription{a: a, c: c, ser: ser, ch: ch, opts: opts, fl: broker.NewInflight(ch.MaxInFlight),
		log: ch.Logger, hctx: hctx, cancel: cancel, stop: make(chan struct{}), held: map[string]*held{},
		acks: make(chan string, 4*DefaultAckBatch), ackDone: make(chan struct{})}
}

func (s *subscription) Start() {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	s.reader, s.owned = s.a.newReader(s.recordReaderConn)
	s.loops.Add(2)
	go s.fetchLoop()
	go s.maintainLoop()
	go s.ackLoop()
}

// sleep waits d or until the drain starts; it reports whether to go on.
func (s *subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

func (s *subscription) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// fetchLoop reads new messages, up to MaxInFlight at a time.
func (s *subscription) fetchLoop() {
	defer s.loops.Done()
	backoff := 100 * time.Millisecond
	for {
		// Wait for a free slot, but do not hold slots while blocked in
		// XREADGROUP: the maintenance loop claims with the same slots. Read
		// up to MaxInFlight entries: those beyond the free slots wait here,
		// in order, for a slot (a prefetch bounded by MaxInFlight).
		if !s.fl.Acquire(s.hctx) {
			return
		}
		s.fl.Release()
		count := s.fl.Max()
		res, err := s.reader.XReadGroup(s.hctx, &goredis.XReadGroupArgs{Group: s.ch.Group, Consumer: s.ch.ConsumerName,
			Streams: []string{s.ch.Name, ">"}, Count: int64(count), Block: s.opts.ReadTimeout}).Result()
		var msgs []goredis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		if err != nil && !errors.Is(err, goredis.Nil) {
			if s.stopping() {
				return
			}
			if isNoGroup(err) {
				// The stream or group was deleted: recreate it and go on.
				_ = s.c.XGroupCreateMkStream(s.hctx, s.ch.Name, s.ch.Group, s.opts.StartID).Err()
			}
			s.log.Warn("channels/redis: read failed, retrying", "channel", s.ch.Name, "group", s.ch.Group,
				"error", broker.Redact(err.Error()), "in", backoff)
			if !s.sleep(backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		// Held from now on: the heartbeat keeps the ones waiting for a slot
		// from being claimed by another member.
		s.mu.Lock()
		for _, m := range msgs {
			s.held[m.ID] = &held{attempt: 1}
		}
		s.mu.Unlock()
		for i, m := range msgs {
			// Usually free at once; if the maintenance loop took the slot
			// meanwhile, wait for the next one (MaxInFlight holds).
			if !s.fl.Acquire(s.hctx) {
				// Draining: give the rest back, never run: claimable at
				// once, with the delivery counter of this read undone so
				// the next consumer sees attempt 1.
				ids := make([]string, 0, len(msgs)-i)
				for _, r := range msgs[i:] {
					ids = append(ids, r.ID)
				}
				s.beatMu.Lock()
				for _, id := range ids {
					s.release(id)
				}
				s.giveBack(ids, 0, 0)
				s.beatMu.Unlock()
				return
			}
			s.dispatch(m, 1)
		}
	}
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// dispatch runs one message on a slot already taken.
func (s *subscription) dispatch(m goredis.XMessage, attempt int) {
	s.mu.Lock()
	if h, ok := s.held[m.ID]; ok && h.timer != nil {
		h.timer.Stop()
	}
	s.held[m.ID] = &held{attempt: attempt}
	s.mu.Unlock()
	s.fl.Go(func() { s.handle(m, attempt) })
}

func (s *subscription) decode(m goredis.XMessage, attempt int) (*broker.Message, string, error) {
	msg := broker.NewMessage(s.ser)
	msg.Channel, msg.Group, msg.ID, msg.Attempt, msg.Raw = s.ch.Name, s.ch.Group, m.ID, attempt, m
	if ms, err := strconv.ParseInt(strings.SplitN(m.ID, "-", 2)[0], 10, 64); err == nil {
		msg.Timestamp = time.UnixMilli(ms)
	}
	p, ok := m.Values[FieldPayload].(string)
	if !ok {
		return msg, "payload", fmt.Errorf("stream entry has no %q field", FieldPayload)
	}
	msg.Payload = []byte(p)
	if hv, ok := m.Values[FieldHeaders]; ok {
		hs, _ := hv.(string)
		var h map[string]any
		if err := s.ser.Unmarshal([]byte(hs), &h); err != nil {
			return msg, "headers", err
		}
		msg.Headers = make(map[string]string, len(h))
		for k, v := range h {
			switch x := v.(type) {
			case string:
				msg.Headers[k] = x
			case nil:
			default:
				msg.Headers[k] = fmt.Sprint(x)
			}
		}
	}
	return msg, "", nil
}

func (s *subscription) handle(m goredis.XMessage, attempt int) {
	msg, field, err := s.decode(m, attempt)
	var out broker.Outcome
	if err != nil {
		out = s.ch.Poison(msg, field, err)
	} else {
		out = s.ch.Process(s.hctx, msg)
	}
	s.settle(m, msg, out)
}

// settle executes an outcome.
func (s *subscription) settle(m goredis.XMessage, msg *broker.Message, out broker.Outcome) {
	switch out.Action {
	case broker.Ack, broker.Drop:
		s.release(m.ID)
		s.ack(m.ID)
	case broker.Retry:
		s.scheduleRetry(m.ID, msg.Attempt, out.Delay)
	case broker.DeadLetter:
		if err := s.deadLetter(msg.Payload, out.Headers); err != nil {
			// Stay pending: after MinIdleTime the message is claimed again,
			// found over its limit and dead-lettered once more, with the
			// error kept here.
			s.log.Error("channels/redis: dead-letter publish failed; the message stays pending",
				"channel", s.ch.Name, "group", s.ch.Group, "id", m.ID, "error", err)
			s.keepErrorInfo(m.ID, out.Headers)
			s.release(m.ID)
			return
		}
		s.dropErrorInfo(m.ID)
		s.release(m.ID)
		s.ack(m.ID)
	}
}

// errorInfoKey is the hash that keeps the x-error-* headers of a message
// whose dead-lettering must be tried again (the key @moleculer/channels uses).
func (s *subscription) errorInfoKey(id string) string { return "chan:" + s.ch.Name + ":msg:" + id }

func (s *subscription) keepErrorInfo(id string, headers map[string]string) {
	fields := make(map[string]any)
	for k, v := range headers {
		if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
			fields[k] = v
		}
	}
	if len(fields) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := s.errorInfoKey(id)
	if err := s.c.HSet(ctx, key, fields).Err(); err == nil {
		s.c.Expire(ctx, key, DefaultErrorInfoTTL)
	}
}

func (s *subscription) dropErrorInfo(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.c.Del(ctx, s.errorInfoKey(id))
}

// giveUpClaimed is the outcome of an entry found over its limit: the kept
// error of its last attempt when there is one, else ErrMaxAttemptsExceeded.
func (s *subscription) giveUpClaimed(msg *broker.Message) broker.Outcome {
	out := s.ch.GiveUp(msg, broker.ErrMaxAttemptsExceeded)
	if out.Action != broker.DeadLetter {
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if kept, err := s.c.HGetAll(ctx, s.errorInfoKey(msg.ID)).Result(); err == nil && len(kept) > 0 {
		for k := range out.Headers {
			if strings.HasPrefix(k, broker.HeaderErrorPrefix) {
				delete(out.Headers, k)
			}
		}
		for k, v := range kept {
			out.Headers[k] = v
		}
	}
	return out
}

// ack queues an id for the ack loop. After a drain that timed out, late
// handlers do not ack: their messages stay pending and are redelivered.
func (s *subscription) ack(id string) {
	s.ackMu.RLock()
	defer s.ackMu.RUnlock()
	if !s.acksShut {
		s.acks <- id
	}
}

// giveBack makes held-but-unfinished messages claimable by any consumer of
// the group after wait (0: at once), by setting their idle time with XCLAIM
// IDLE ... JUSTID (which does not bump the delivery counter). A retryCount
// >= 0 also sets the delivery counter (RETRYCOUNT), for entries read but
// never run. Callers that release held entries hold beatMu.
func (s *subscription) giveBack(ids []string, wait time.Duration, retryCount int) {
	if len(ids) == 0 {
		return
	}
	idle := s.opts.MinIdleTime - wait
	if idle < 0 {
		idle = 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args := []any{"XCLAIM", s.ch.Name, s.ch.Group, s.ch.ConsumerName, 0}
	for _, id := range ids {
		args = append(args, id)
	}
	args = append(args, "IDLE", idle.Milliseconds())
	if retryCount >= 0 {
		args = append(args, "RETRYCOUNT", retryCount)
	}
	args = append(args, "JUSTID")
	if err := s.c.Do(ctx, args...).Err(); err != nil {
		s.log.Warn("channels/redis: give back failed; the messages are claimable after MinIdleTime",
			"channel", s.ch.Name, "count", len(ids), "error", err)
	}
}

func (s *subscription) deadLetter(payload []byte, headers map[string]string) error {
	values, err := encodeFields(s.ser, payload, headers)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.c.XAdd(ctx, &goredis.XAddArgs{Stream: s.ch.DeadLetter.Queue, Values: values}).Err()
}

func (s *subscription) release(id string) {
	s.mu.Lock()
	delete(s.held, id)
	s.mu.Unlock()
}

// scheduleRetry hands a failed message back to the group so that it can
// be claimed, by any member, once the backoff delay has passed: its idle
// time is set to MinIdleTime-delay. A delay longer than MinIdleTime keeps
// the message held (heartbeat) until the remainder fits.
func (s *subscription) scheduleRetry(id string, attempt int, delay time.Duration) {
	if delay <= s.opts.MinIdleTime {
		s.beatMu.Lock()
		defer s.beatMu.Unlock()
		s.release(id)
		s.giveBack([]string{id}, delay, -1)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &held{attempt: attempt, due: time.Now().Add(delay)}
	s.held[id] = h
	h.timer = time.AfterFunc(delay-s.opts.MinIdleTime, func() {
		s.beatMu.Lock()
		defer s.beatMu.Unlock()
		s.mu.Lock()
		cur, ok := s.held[id]
		live := ok && cur == h && !s.stopping()
		if live {
			delete(s.held, id)
		}
		s.mu.Unlock()
		if live {
			s.giveBack([]string{id}, s.opts.MinIdleTime, -1)
		}
	})
}

// maintainLoop is the single loop that refreshes held messages, claims the
// messages of dead consumers and gives up on those over their limit. The
// heartbeat has its own ticker, so a long ClaimInterval cannot let a live
// message reach MinIdleTime.
func (s *subscription) maintainLoop() {
	defer s.loops.Done()
	// Jitter keeps the members of a group from ticking in lockstep, so a
	// failed message is not always reclaimed by the member that failed it.
	jitter := func() time.Duration { return s.opts.ClaimInterval/2 + rand.N(s.opts.ClaimInterval) }
	claim := time.NewTimer(jitter())
	defer claim.Stop()
	beat := time.NewTicker(s.opts.HeartbeatInterval)
	defer beat.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-beat.C:
			s.heartbeat()
		case <-claim.C:
			s.claimIdle()
			if time.Since(lastSweep) >= s.opts.StaleConsumerAge/4 {
				s.sweepConsumers()
				lastSweep = time.Now()
			}
			claim.Reset(jitter())
		}
	}
}

// sweepConsumers deletes the group's consumers that hold nothing and have
// been idle longer than StaleConsumerAge, so the names of crashed processes
// do not pile up. A consumer with pending messages is never deleted (its
// messages are claimed first).
func (s *subscription) sweepConsumers() {
	cs, err := s.c.XInfoConsumers(s.hctx, s.ch.Name, s.ch.Group).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name == s.ch.ConsumerName || c.Pending > 0 || c.Idle < s.opts.StaleConsumerAge {
			continue
		}
		if err := s.c.XGroupDelConsumer(s.hctx, s.ch.Name, s.ch.Group, c.Name).Err(); err == nil {
			s.log.Warn("channels/redis: removed a stale consumer", "channel", s.ch.Name, "group", s.ch.Group, "consumer", c.Name)
		}
	}
}

// heartbeat resets the idle time of every held message (XCLAIM JUSTID
// does not bump the delivery counter), so a slow live handler keeps its
// message.
func (s *subscription) heartbeat() {
	s.beatMu.Lock()
	defer s.beatMu.Unlock()
	s.mu.Lock()
	ids := make([]string, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for len(ids) > 0 {
		n := min(len(ids), 500)
		if err := s.c.XClaimJustID(s.hctx, &goredis.XClaimArgs{Stream: s.ch.Name, Group: s.ch.Group,
			Consumer: s.ch.ConsumerName, MinIdle: 0, Messages: ids[:n]}).Err(); err != nil && !s.stopping() {
			s.log.Warn("channels/redis: heartbeat failed", "channel", s.ch.Name, "error", err)
		}
		ids = ids[n:]
	}
}

// claimIdle scans the whole pending list for entries idle longer than
// MinIdleTime that this consumer does not hold (a dead consumer's, or a
// crashed earlier run of this one), and claims as many as there are free
// slots. An entry over its delivery limit is dead-lettered (or dropped)
// without running the handler.
func (s *subscription) claimIdle() {
	start := "-"
	for !s.stopping() {
		pend, err := s.c.XPendingExt(s.hctx, &goredis.XPendingExtArgs{Stream: s.ch.Name, Group: s.ch.Group,
			Idle: s.opts.MinIdleTime, Start: start, End: "+", Count: DefaultPendingPage}).Result()
		if err != nil {
			if !s.stopping() && !isNoGroup(err) {
				s.log.Warn("channels/redis: pending scan failed", "channel", s.ch.Name, "error", err)
			}
			return
		}
		for _, p := range pend {
			s.mu.Lock()
			_, mine := s.held[p.ID]
			s.mu.Unlock()
			if mine {
				continue
			}
			if !s.fl.TryAcquire() {
				return
			}
			// MinIdle makes the claim atomic against other consumers doing the same.
			msgs, err := s.c.XClaim(s.hctx, &goredis.XClaimArgs{Stream: s.ch.Name, Group: s.ch.Group,
				Consumer: s.ch.ConsumerName, MinIdle: s.opts.MinIdleTime, Messages: []string{p.ID}}).Result()
			if err != nil || len(msgs) == 0 {
				s.fl.Release()
				continue
			}
			m := msgs[0]
			attempt := int(p.RetryCount) + 1
			if m.Values == nil {
				s.fl.Release()
				s.ack(p.ID) // deleted entry: clear it from the pending list
				continue
			}
			if attempt > s.ch.Retry.MaxRetries+1 {
				s.mu.Lock()
				s.held[m.ID] = &held{attempt: attempt}
				s.mu.Unlock()
				s.fl.Go(func() {
					msg, _, _ := s.decode(m, attempt)
					s.settle(m, msg, s.giveUpClaimed(msg))
				})
				continue
			}
			s.dispatch(m, attempt)
		}
		if len(pend) < DefaultPendingPage {
			return
		}
		start = "(" + pend[len(pend)-1].ID
	}
}

// ackLoop acknowledges in batches: whatever is queued goes in one XACK, so
// a lone message is acked at once and a burst shares round trips.
func (s *subscription) ackLoop() {
	defer close(s.ackDone)
	batch := make([]string, 0, DefaultAckBatch)
	for id := range s.acks {
		batch = append(batch[:0], id)
	more:
		for len(batch) < DefaultAckBatch {
			select {
			case id, ok := <-s.acks:
				if !ok {
					break more
				}
				batch = append(batch, id)
			default:
				break more
			}
		}
		s.xack(batch)
	}
}

func (s *subscription) xack(ids []string) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.c.XAck(ctx, s.ch.Name, s.ch.Group, ids...).Err()
		cancel()
		if err == nil {
			return
		}
		if attempt >= 5 {
			// Unacked messages are redelivered after MinIdleTime: nothing is lost.
			s.log.Error("channels/redis: ack failed; the messages will be redelivered", "channel", s.ch.Name,
				"count", len(ids), "error", err)
			return
		}
		time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
	}
}

// Drain stops fetching, waits for running handlers (bounded by ctx),
// flushes the acks, gives back what was held without running so another
// consumer gets it at once, and removes the consumer if it holds nothing.
func (s *subscription) Drain(ctx context.Context) error {
	s.drainOnce.Do(func() {
		close(s.stop)
		s.fl.Close()
		defer s.a.forget(s)
		if !s.started.Load() {
			s.cancel()
			close(s.acks)
			return
		}
		s.stopReader(ctx)
		s.loops.Wait() // no new dispatch after this
		if s.owned {
			_ = s.reader.Close()
		}
		err := s.fl.Wait(ctx)
		s.cancel()
		s.ackMu.Lock()
		s.acksShut = true
		close(s.acks)
		s.ackMu.Unlock()
		<-s.ackDone
		// Messages waiting for a long retry: claimable by the group when
		// their backoff ends, or after MinIdleTime if that comes first.
		s.mu.Lock()
		waiting := map[string]time.Duration{}
		for id, h := range s.held {
			if h.timer != nil {
				h.timer.Stop()
				waiting[id] = min(max(time.Until(h.due), 0), s.opts.MinIdleTime)
			}
		}
		s.mu.Unlock()
		for id, wait := range waiting {
			s.giveBack([]string{id}, wait, -1)
		}
		if err == nil {
			s.cleanupConsumer()
		}
		s.drainErr = err
	})
	return s.drainErr
}

// recordReaderConn notes the server-side id of a reader connection.
func (s *subscription) recordReaderConn(id int64, laddr string) {
	s.readerMu.Lock()
	defer s.readerMu.Unlock()
	if s.readerConns == nil || len(s.readerConns) >= 64 { // reconnects: forget old ones
		s.readerConns = map[int64]string{}
	}
	s.readerConns[id] = laddr
}

// stopReader ends the fetch loop's blocking read. It asks Redis to end it
// (CLIENT UNBLOCK: the read returns as if it had timed out, so an entry
// Redis delivered just then is not lost in a closed socket), repeating until
// the fetch loop has left, since the read may start just after an unblock.
// When that is not possible (a caller-owned client, no CLIENT permission, a
// node that cannot be matched) or ctx ends, it closes the reader instead;
// an entry swallowed that way stays pending for MinIdleTime. A shared
// client is left alone: the read then ends within ReadTimeout.
func (s *subscription) stopReader(ctx context.Context) {
	if !s.owned {
		return
	}
	left := make(chan struct{})
	go func() { s.loops.Wait(); close(left) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if !s.unblockReader(ctx) {
			_ = s.reader.Close()
			<-left
			return
		}
		select {
		case <-left:
			return
		case <-ctx.Done():
			_ = s.reader.Close()
			<-left
			return
		case <-tick.C:
		}
	}
}

// unblockReader sends CLIENT UNBLOCK for every known reader connection, to
// the node it is connected to. It reports false when it cannot.
func (s *subscription) unblockReader(ctx context.Context) bool {
	s.readerMu.Lock()
	conns := make(map[int64]string, len(s.readerConns))
	for id, laddr := range s.readerConns {
		conns[id] = laddr
	}
	s.readerMu.Unlock()
	if len(conns) == 0 {
		// No connection yet (nothing can be blocked), or ids unknown.
		return s.reader.PoolStats().TotalConns == 0
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for id, laddr := range conns {
		node, ok := s.nodeFor(ctx, laddr)
		if !ok {
			return false
		}
		if err := node.ClientUnblock(ctx, id).Err(); err != nil {
			return false
		}
	}
	return true
}

// nodeFor returns a client of the adapter for the server at laddr.
func (s *subscription) nodeFor(ctx context.Context, laddr string) (goredis.Cmdable, bool) {
	switch c := s.c.(type) {
	case *goredis.Client:
		return c, true // one server: the reader's
	case *goredis.ClusterClient:
		var found goredis.Cmdable
		var mu sync.Mutex
		_ = c.ForEachShard(ctx, func(ctx context.Context, n *goredis.Client) error {
			if n.Options().Addr == laddr {
				mu.Lock()
				found = n
				mu.Unlock()
			}
			return nil
		})
		return found, found != nil
	}
	return nil, false
}

// cleanupConsumer removes this consumer from the group when it holds no
// pending message (a consumer with pending messages is kept, so they are
// not orphaned).
func (s *subscription) cleanupConsumer() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pend, err := s.c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: s.ch.Name, Group: s.ch.Group,
		Start: "-", End: "+", Count: 1, Consumer: s.ch.ConsumerName}).Result()
	if err == nil && len(pend) == 0 {
		_ = s.c.XGroupDelConsumer(ctx, s.ch.Name, s.ch.Group, s.ch.ConsumerName).Err()
	}
}
