package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

const (
	// unblockPoll is how often a drain repeats CLIENT UNBLOCK until the
	// fetch loop has left (the read may start just after an unblock).
	unblockPoll = 10 * time.Millisecond
	// unblockTimeout bounds one round of CLIENT UNBLOCK commands.
	unblockTimeout = time.Second
	// readerPoolSize is the size of the dedicated blocking-read client's pool.
	readerPoolSize = 2
	// readerConnsKept bounds the remembered reader connection ids
	// (reconnects add new ones).
	readerConnsKept = 64
)

// reader is the client of the blocking XREADGROUP: a dedicated small client
// when the adapter owns its options, else the shared client. The dedicated
// client records the server-side id of each of its connections, so that a
// drain ends a blocked read with CLIENT UNBLOCK instead of closing the
// connection (which could swallow entries Redis had just delivered).
type reader struct {
	s      *subscription
	client goredis.UniversalClient
	owned  bool

	mu    sync.Mutex
	conns map[int64]string // server-side connection id -> server address
}

func (a *Adapter) newReader(s *subscription) *reader {
	r := &reader{s: s}
	if a.uopts == nil {
		r.client = a.client
		return r
	}
	o := *a.uopts
	o.PoolSize = readerPoolSize
	o.MinIdleConns = 0
	o.ContextTimeoutEnabled = true
	userHook := o.OnConnect
	o.OnConnect = func(ctx context.Context, cn *goredis.Conn) error {
		if userHook != nil {
			if err := userHook(ctx, cn); err != nil {
				return err
			}
		}
		// Best effort: without the id (CLIENT not allowed to this ACL user,
		// Redis < 6.2) a drain closes the connection instead.
		if info, err := cn.ClientInfo(ctx).Result(); err == nil && info != nil {
			r.record(info.ID, info.LAddr)
		}
		return nil
	}
	r.client, r.owned = goredis.NewUniversalClient(&o), true
	return r
}

func (r *reader) record(id int64, laddr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil || len(r.conns) >= readerConnsKept { // reconnects: forget old ones
		r.conns = map[int64]string{}
	}
	r.conns[id] = laddr
}

func (r *reader) close() {
	if r.owned {
		_ = r.client.Close()
	}
}

// fetchLoop reads new messages, up to MaxInFlight at a time. It does not
// hold slots while blocked in XREADGROUP (the maintenance loop claims with
// the same slots); entries read beyond the free slots are held (the
// heartbeat keeps them) and wait, in order, for a slot.
func (s *subscription) fetchLoop() {
	var retry broker.Reconnect
	for {
		// A slot must be free (and not wanted by a due retry or a claimed
		// message, which go first) before reading.
		if !s.AcquireForFetch() {
			return
		}
		s.ReleaseSlot()
		res, err := s.rd.client.XReadGroup(s.Context(), &goredis.XReadGroupArgs{Group: s.ch.Group,
			Consumer: s.ch.ConsumerName, Streams: []string{s.ch.Name, ">"}, Count: int64(s.MaxInFlight()),
			Block: s.opts.ReadTimeout}).Result()
		var msgs []goredis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		if err != nil && !errors.Is(err, goredis.Nil) {
			if s.IsStopping() {
				return
			}
			if isNoGroup(err) {
				// The stream or group was deleted: recreate it and go on.
				_ = s.c.XGroupCreateMkStream(s.Context(), s.ch.Name, s.ch.Group, s.opts.StartID).Err()
			}
			s.log.Warn("channels/redis: read failed, retrying", "channel", s.ch.Name, "group", s.ch.Group,
				"error", broker.Redact(err.Error()), "in", retry.Next())
			if _, ok := retry.Failed(s.Stopping()); !ok {
				return
			}
			continue
		}
		retry.Succeeded()
		ids := make([]string, len(msgs))
		for i, m := range msgs {
			ids[i] = m.ID
		}
		s.held.add(ids...)
		for i, m := range msgs {
			// Usually free at once; if the maintenance loop took the slot
			// meanwhile, wait for the next one (MaxInFlight holds).
			if !s.Acquire() {
				// Draining: hand the rest back unrun, claimable at once,
				// with the delivery of this read undone (attempt 1 and no
				// delivery used up for the next consumer).
				ctx, cancel := context.WithTimeout(context.Background(), DefaultOpTimeout)
				_ = s.release(ctx, ids[i:], 0)
				cancel()
				return
			}
			s.Run(s.delivery(m, 1, 1, record{}), nil)
		}
	}
}

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }

// stop ends the fetch loop's blocking read. It asks Redis to end it (CLIENT
// UNBLOCK: the read returns as if it had timed out), repeating until the
// fetch loop has left. When that is not possible (a caller-owned client,
// no CLIENT permission, a node that cannot be matched) or ctx ends, it
// closes the reader instead; an entry swallowed that way stays pending for
// MinIdleTime. A shared client is left alone: the read then ends within
// ReadTimeout.
func (r *reader) stop(ctx context.Context) {
	if !r.owned {
		return
	}
	left := r.s.LoopsDone()
	tick := time.NewTicker(unblockPoll)
	defer tick.Stop()
	for {
		if !r.unblock(ctx) {
			_ = r.client.Close()
			return
		}
		select {
		case <-left:
			return
		case <-ctx.Done():
			_ = r.client.Close()
			return
		case <-tick.C:
		}
	}
}

// unblock sends CLIENT UNBLOCK for every known reader connection, to the
// node it is connected to. It reports false when it cannot.
func (r *reader) unblock(ctx context.Context) bool {
	r.mu.Lock()
	conns := make(map[int64]string, len(r.conns))
	for id, laddr := range r.conns {
		conns[id] = laddr
	}
	r.mu.Unlock()
	if len(conns) == 0 {
		// No connection yet (nothing can be blocked), or ids unknown.
		return r.client.PoolStats().TotalConns == 0
	}
	ctx, cancel := context.WithTimeout(ctx, unblockTimeout)
	defer cancel()
	for id, laddr := range conns {
		node, ok := r.s.nodeFor(ctx, laddr)
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
