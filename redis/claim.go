package redis

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// holdings are the messages this consumer owns and must keep from being
// claimed: running, read ahead and waiting for a slot, or waiting for a
// retry whose backoff is longer than MinIdleTime.
type holdings struct {
	mu sync.Mutex
	m  map[string]*held
	// beatMu orders a heartbeat against the hand-backs: a heartbeat whose
	// snapshot still had a message must not reset its idle time after the
	// message was handed back (that would delay its retry by MinIdleTime).
	beatMu sync.Mutex
}

type held struct {
	timer *time.Timer // pending long retry, nil otherwise
	due   time.Time   // when that retry is due
}

func newHoldings() *holdings { return &holdings{m: map[string]*held{}} }

func (h *holdings) add(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if old, ok := h.m[id]; ok && old.timer != nil {
			old.timer.Stop()
		}
		h.m[id] = &held{}
	}
}

func (h *holdings) remove(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		delete(h.m, id)
	}
}

func (h *holdings) has(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.m[id]
	return ok
}

func (h *holdings) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.m))
	for id := range h.m {
		ids = append(ids, id)
	}
	return ids
}

// giveBack makes held messages claimable by any consumer of the group
// after wait (0: at once), by setting their idle time with XCLAIM IDLE ...
// JUSTID (which does not count a delivery). A retryCount >= 0 also sets
// the delivery counter (RETRYCOUNT), to undo the delivery of a message that
// was not run. Callers hold beatMu.
func (s *subscription) giveBack(ctx context.Context, ids []string, wait time.Duration, retryCount int) error {
	if len(ids) == 0 {
		return nil
	}
	idle := max(s.opts.MinIdleTime-wait, 0)
	ctx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
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
		return err
	}
	return nil
}

// release hands back messages that were not run (or whose run our stop
// cut), claimable at once, with their delivery counter set to retryCount.
func (s *subscription) release(ctx context.Context, ids []string, retryCount int) error {
	s.held.beatMu.Lock()
	defer s.held.beatMu.Unlock()
	s.held.remove(ids...)
	return s.giveBack(ctx, ids, 0, max(retryCount, 0))
}

// scheduleRetry hands a failed message back to the group so that it can
// be claimed, by any member, once the backoff delay has passed: its idle
// time is set to MinIdleTime-delay. A delay longer than MinIdleTime keeps
// the message held (heartbeat) until the remainder fits.
func (s *subscription) scheduleRetry(ctx context.Context, id string, delay time.Duration) {
	if delay <= s.opts.MinIdleTime {
		s.held.beatMu.Lock()
		defer s.held.beatMu.Unlock()
		s.held.remove(id)
		_ = s.giveBack(ctx, []string{id}, delay, -1)
		return
	}
	h := &held{due: time.Now().Add(delay)}
	s.held.mu.Lock()
	defer s.held.mu.Unlock()
	s.held.m[id] = h
	h.timer = time.AfterFunc(delay-s.opts.MinIdleTime, func() {
		s.held.beatMu.Lock()
		defer s.held.beatMu.Unlock()
		s.held.mu.Lock()
		cur, ok := s.held.m[id]
		live := ok && cur == h && !s.IsStopping()
		if live {
			delete(s.held.m, id)
		}
		s.held.mu.Unlock()
		if live {
			_ = s.giveBack(context.Background(), []string{id}, s.opts.MinIdleTime, -1)
		}
	})
}

// handBackWaiting makes the messages waiting for a long retry claimable by
// the group when their backoff ends (or after MinIdleTime if that comes
// first). Used by a drain.
func (s *subscription) handBackWaiting(ctx context.Context) {
	s.held.mu.Lock()
	waiting := map[string]time.Duration{}
	for id, h := range s.held.m {
		if h.timer != nil {
			h.timer.Stop()
			waiting[id] = min(max(time.Until(h.due), 0), s.opts.MinIdleTime)
		}
	}
	s.held.mu.Unlock()
	s.held.beatMu.Lock()
	defer s.held.beatMu.Unlock()
	for id, wait := range waiting {
		if ctx.Err() != nil {
			return // claimable after MinIdleTime anyway
		}
		_ = s.giveBack(ctx, []string{id}, wait, -1)
	}
}

// maintainLoop is the loop that claims the messages of dead consumers and
// sweeps stale consumers. The heartbeat is not part of it: it runs on the
// kit's Beat, with its own ticker (a long ClaimInterval cannot let a live
// message reach MinIdleTime), and goes on while a drain waits for slow
// handlers.
func (s *subscription) maintainLoop() {
	// Jitter keeps the members of a group from ticking in lockstep, so a
	// failed message is not always reclaimed by the member that failed it.
	jitter := func() time.Duration { return s.opts.ClaimInterval/2 + rand.N(s.opts.ClaimInterval) }
	claim := time.NewTimer(jitter())
	defer claim.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-s.Stopping():
			return
		case <-claim.C:
			s.claimIdle()
			if time.Since(lastSweep) >= s.opts.StaleConsumerAge/staleSweepsPerAge {
				s.sweepConsumers()
				lastSweep = time.Now()
			}
			claim.Reset(jitter())
		}
	}
}

// heartbeatScript resets the idle time of the given entries that this
// consumer still owns, atomically per entry: an entry another member has
// claimed meanwhile (after a missed heartbeat) is left to it. It returns
// the ids it did not refresh.
var heartbeatScript = goredis.NewScript(`
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
`)

// heartbeat resets the idle time of every held message this consumer still
// owns (no delivery is counted), so a slow live handler keeps its message.
func (s *subscription) heartbeat() {
	s.held.beatMu.Lock()
	defer s.held.beatMu.Unlock()
	ids := s.held.ids()
	for len(ids) > 0 {
		n := min(len(ids), heartbeatBatch)
		args := make([]any, 0, n+2)
		args = append(args, s.ch.Group, s.ch.ConsumerName)
		for _, id := range ids[:n] {
			args = append(args, id)
		}
		lost, err := heartbeatScript.Run(s.Context(), s.c, []string{s.ch.Name}, args...).StringSlice()
		switch {
		case err != nil && !s.IsStopping():
			s.log.Warn("channels/redis: heartbeat failed", "channel", s.ch.Name, "error", err)
		case len(lost) > 0:
			// Claimed by another member after a missed heartbeat (or acked
			// meanwhile): stop holding them.
			s.held.remove(lost...)
		}
		ids = ids[n:]
	}
}

// claimIdle scans the whole pending list for entries idle longer than
// MinIdleTime that this consumer does not hold (a dead consumer's, handed
// back for a retry, or a crashed earlier run of this one), and claims as
// many as there are free slots. The kit decides, from the failure record
// and the delivery counter, whether each runs or is given up.
func (s *subscription) claimIdle() {
	// Waiting for a slot: new reads pause until the next pass took it.
	if s.claimPass() {
		s.WantSlots()
	} else {
		s.SlotsGranted()
	}
}

// claimPass claims what it can; it reports whether a claimable entry was
// left for want of a free slot.
func (s *subscription) claimPass() (starved bool) {
	start := "-"
	for !s.IsStopping() {
		pend, err := s.c.XPendingExt(s.Context(), &goredis.XPendingExtArgs{Stream: s.ch.Name, Group: s.ch.Group,
			Idle: s.opts.MinIdleTime, Start: start, End: "+", Count: DefaultPendingPage}).Result()
		if err != nil {
			if !s.IsStopping() && !isNoGroup(err) {
				s.log.Warn("channels/redis: pending scan failed", "channel", s.ch.Name, "error", err)
			}
			return false
		}
		for _, p := range pend {
			if s.held.has(p.ID) {
				continue
			}
			if !s.TryAcquire() {
				return true
			}
			// MinIdle makes the claim atomic against other consumers doing the same.
			msgs, err := s.c.XClaim(s.Context(), &goredis.XClaimArgs{Stream: s.ch.Name, Group: s.ch.Group,
				Consumer: s.ch.ConsumerName, MinIdle: s.opts.MinIdleTime, Messages: []string{p.ID}}).Result()
			if err != nil || len(msgs) == 0 {
				s.ReleaseSlot()
				continue
			}
			m := msgs[0]
			if m.Values == nil {
				s.ReleaseSlot()
				_ = s.acks.Add(ackItem{p.ID, true}) // deleted entry: clear it from the pending list
				continue
			}
			rec, err := s.recs.load(s.Context(), m.ID)
			if err != nil {
				s.log.Warn("channels/redis: reading the failure record failed; counting from the delivery counter",
					"channel", s.ch.Name, "id", m.ID, "error", err)
			}
			s.held.add(m.ID)
			s.Run(s.delivery(m, rec.failures+1, int(p.RetryCount)+1, rec), nil)
		}
		if len(pend) < DefaultPendingPage {
			return false
		}
		start = "(" + pend[len(pend)-1].ID
	}
	return false
}

// sweepConsumers deletes the group's consumers that hold nothing and have
// been idle longer than StaleConsumerAge, so the names of crashed processes
// do not pile up. A consumer with pending messages is never deleted (its
// messages are claimed first).
func (s *subscription) sweepConsumers() {
	cs, err := s.c.XInfoConsumers(s.Context(), s.ch.Name, s.ch.Group).Result()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Name == s.ch.ConsumerName || c.Pending > 0 || c.Idle < s.opts.StaleConsumerAge {
			continue
		}
		if err := s.c.XGroupDelConsumer(s.Context(), s.ch.Name, s.ch.Group, c.Name).Err(); err == nil {
			s.log.Warn("channels/redis: removed a stale consumer", "channel", s.ch.Name, "group", s.ch.Group, "consumer", c.Name)
		}
	}
}

// cleanupConsumer removes this consumer from the group when it holds no
// pending message (a consumer with pending messages is kept, so they are
// not orphaned).
func (s *subscription) cleanupConsumer(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
	defer cancel()
	pend, err := s.c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: s.ch.Name, Group: s.ch.Group,
		Start: "-", End: "+", Count: 1, Consumer: s.ch.ConsumerName}).Result()
	if err == nil && len(pend) == 0 {
		_ = s.c.XGroupDelConsumer(ctx, s.ch.Name, s.ch.Group, s.ch.ConsumerName).Err()
	}
}
