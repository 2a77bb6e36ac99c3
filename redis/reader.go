package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

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
	// The fetch loop sends acks in the same pipeline as its blocking read:
	// on the recorded connections (no pipeline pool), with a read timeout
	// beyond the block, as go-redis gives a lone blocking command.
	o.PipelinePoolSize = -1
	if o.ReadTimeout >= 0 {
		o.ReadTimeout = max(o.ReadTimeout, s.opts.ReadTimeout+10*time.Second)
	}
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
	watchFailover(r.client)
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

// fetchLoop reads new messages ahead of the free slots: up to MaxInFlight
// entries are held (Consumer.Hold), so the next XREADGROUP is already
// waiting while the handlers run, and each entry runs in order on the next
// free slot. Held entries are heartbeated (held.add) like running ones; a
// drain hands back those that never ran. Reads pause while a due retry or
// a claimed message waits for a slot.
func (s *subscription) fetchLoop() {
	var retry kit.Reconnect
	for {
		n, ok := s.AwaitFetch()
		if !ok {
			return
		}
		res, err := s.read(n)
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
		for _, m := range msgs {
			s.held.add(m.ID)
		}
		for _, m := range msgs {
			// Runs on the next free slot; handed back unrun (attempt 1, the
			// delivery of this read undone) if the drain comes first.
			s.Hold(s.delivery(m, 1, 1, record{}))
		}
	}
}

// read is one XREADGROUP of up to n new entries. On the adapter's own
// reader client it carries the acknowledgements that came since the last
// read in the same pipeline (acker).
func (s *subscription) read(n int) ([]goredis.XStream, error) {
	args := &goredis.XReadGroupArgs{Group: s.ch.Group, Consumer: s.ch.ConsumerName,
		Streams: []string{s.ch.Name, ">"}, Count: int64(n), Block: s.opts.ReadTimeout}
	if !s.rd.owned {
		return s.rd.client.XReadGroup(s.Context(), args).Result()
	}
	acks := s.acks.take()
	defer s.acks.readEnded()
	if len(acks) == 0 {
		return s.rd.client.XReadGroup(s.Context(), args).Result()
	}
	pipe := s.rd.client.Pipeline()
	ack := s.queueAck(s.Context(), pipe, acks)
	rd := pipe.XReadGroup(s.Context(), args)
	_, _ = pipe.Exec(s.Context())
	if ack.Err() != nil {
		s.acks.giveBack(acks) // the flusher retries them
	} else {
		s.acked(acks)
	}
	return rd.Result()
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
