package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// DefaultWaitTimeout is how long a send that waits for replicas
// ([WithWaitReplicas], SendOptions.WaitReplicas) waits for them when no
// timeout is given.
const DefaultWaitTimeout = time.Second

// Retries of a send that waits for replicas on a Cluster, whose XADD went
// to a node that no longer serves the slot (MOVED, READONLY after a
// failover, a dead master, CLUSTERDOWN while the replica takes over): at
// most waitRetries, waitBackoff doubling up to waitBackoffMax in between,
// all bounded by the send's context.
const (
	waitRetries    = 24
	waitBackoff    = 20 * time.Millisecond
	waitBackoffMax = 250 * time.Millisecond
)

// replication is how many replicas a send waits for, and how long.
type replication struct {
	n       int
	timeout time.Duration
}

// ReplicationError is the cause of a send error (inside a
// *broker.PublishError, so errors.Is(err, broker.ErrPublish) holds) when
// the message was appended on the master but fewer replicas than asked
// acknowledged it within the timeout. The message exists and will be
// delivered unless the master is lost before a replica copies it: it may or
// may not survive a failover. A caller that resends it may deliver it twice.
type ReplicationError struct {
	// Channel is the stream the message was appended to.
	Channel string
	// Wanted is the replica count asked for; Acked the count WAIT
	// reported (0 when WAIT itself failed, see Err).
	Wanted, Acked int
	// Timeout is the WAIT timeout.
	Timeout time.Duration
	// Err is WAIT's own error, if it failed rather than timed out.
	Err error
}

func (e *ReplicationError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("channels/redis: %q: the message was written on the master, but WAIT for %d replicas failed (%v): it may or may not survive a failover",
			e.Channel, e.Wanted, e.Err)
	}
	return fmt.Sprintf("channels/redis: %q: the message was written on the master, but %d of %d replicas acknowledged it within %s: it may or may not survive a failover",
		e.Channel, e.Acked, e.Wanted, e.Timeout)
}

// Unwrap returns WAIT's error, if any.
func (e *ReplicationError) Unwrap() error { return e.Err }

// WithWaitReplicas makes every send of the adapter, and the dead-letter
// copies it writes, wait until n replicas acknowledged the write (Redis
// WAIT n timeout, default timeout DefaultWaitTimeout when timeout is 0)
// before it returns. A send whose WAIT reaches fewer replicas in time
// returns a *broker.PublishError holding a *ReplicationError: the message
// was written and may or may not survive a failover. SendOptions.WaitReplicas
// overrides it for one send. n = 0, the default, waits for no replica (the
// send returns once the master appended the message).
//
// What it guarantees: an accepted send is in the memory of the master and of
// n replicas. It does not make Redis strongly consistent: a failover may
// still promote a replica that had not received it (with more replicas per
// master than n), and no copy is on disk yet (appendfsync decides that). With
// one replica per master and n = 1, the only replica that can take over has
// every accepted message. Cost: a send takes the replication round trip
// (the WAIT is pipelined with the XADD, on the master of the stream's
// slot); autopipelining does not apply to these sends. The timeout must be
// shorter than the client's read timeout (go-redis default 3s), which
// bounds the pipeline.
func WithWaitReplicas(n int, timeout time.Duration) Option {
	return func(a *Adapter) error {
		if n < 0 || timeout < 0 {
			return fmt.Errorf("%w: redis WaitReplicas and its timeout must be >= 0", broker.ErrInvalidOption)
		}
		a.wait = replication{n: n, timeout: timeout}
		return nil
	}
}

// waitFor is the replication a send asks for: its own SendOptions, else the
// adapter's.
func (a *Adapter) waitFor(o SendOptions, set bool) replication {
	w := a.wait
	if set && o.WaitReplicas != 0 {
		w = replication{n: max(o.WaitReplicas, 0), timeout: o.WaitTimeout}
	} else if set && o.WaitTimeout > 0 {
		w.timeout = o.WaitTimeout
	}
	if w.n > 0 && w.timeout == 0 {
		w.timeout = DefaultWaitTimeout
	}
	return w
}

// checkWait refuses a WAIT timeout the client's read timeout would cut
// (the pipeline's read would time out and go-redis would send the XADD
// again).
func checkWait(c goredis.UniversalClient, w replication) error {
	if w.n == 0 {
		return nil
	}
	var rt time.Duration
	switch x := c.(type) {
	case *goredis.Client:
		rt = x.Options().ReadTimeout
	case *goredis.ClusterClient:
		rt = x.Options().ReadTimeout
	default:
		return fmt.Errorf("%w: redis WaitReplicas needs a *redis.Client or *redis.ClusterClient, got %T", broker.ErrUnsupported, c)
	}
	if rt > 0 && w.timeout >= rt {
		return fmt.Errorf("%w: redis WaitTimeout (%s) must be shorter than the client's ReadTimeout (%s)",
			broker.ErrInvalidOption, w.timeout, rt)
	}
	return nil
}

// xaddWaited appends the entries to stream in one pipeline followed by
// WAIT, on one connection to the master of the stream's slot, and returns
// each entry's result. On a Cluster, the entries refused by a node that no
// longer serves the slot (or unreachable) are sent again to the slot's
// master (redirections followed, ASK with ASKING) until ctx ends; their
// WAIT is the one of the round that wrote them.
func xaddWaited(ctx context.Context, c goredis.UniversalClient, stream string, args []*goredis.XAddArgs, w replication) []error {
	errs := make([]error, len(args))
	todo := make([]int, len(args))
	for i := range todo {
		todo[i] = i
	}
	cc, cluster := c.(*goredis.ClusterClient)
	var node *goredis.Client
	asking := false
	backoff := waitBackoff
	for attempt := 0; ; attempt++ {
		if node == nil {
			switch {
			case cluster:
				n, err := cc.MasterForKey(ctx, stream)
				if err != nil {
					for _, i := range todo {
						errs[i] = err
					}
					return errs
				}
				node = n
			default:
				n, ok := c.(*goredis.Client)
				if !ok {
					err := checkWait(c, w)
					for _, i := range todo {
						errs[i] = err
					}
					return errs
				}
				node = n
			}
		}
		pipe := node.Pipeline()
		if asking {
			pipe.Do(ctx, "asking")
		}
		cmds := make([]*goredis.StringCmd, len(todo))
		for k, i := range todo {
			cmds[k] = pipe.XAdd(ctx, args[i])
		}
		wait := pipe.Do(ctx, "wait", w.n, w.timeout.Milliseconds())
		_, _ = pipe.Exec(ctx) // each command holds its own reply
		var again, written []int
		var redirect string
		asking = false
		for k, i := range todo {
			err := cmds[k].Err()
			switch {
			case err == nil:
				errs[i] = nil
				written = append(written, i)
			case cluster && attempt < waitRetries && ctx.Err() == nil && retryable(err):
				errs[i] = err
				again = append(again, i)
				if addr, ok := goredis.IsMovedError(err); ok {
					redirect = addr
				} else if addr, ok := goredis.IsAskError(err); ok {
					redirect, asking = addr, true
				}
			default:
				errs[i] = err
			}
		}
		if len(written) > 0 {
			if err := replicated(stream, wait, w); err != nil {
				for _, i := range written {
					errs[i] = err
				}
			}
		}
		if len(again) == 0 {
			return errs
		}
		todo, node = again, nil
		if redirect != "" {
			node = nodeByAddr(ctx, cc, redirect)
		}
		if node == nil {
			// A dead master or a failover under way: the cluster's view of
			// the slots is reloaded, the send waits a little.
			cc.ReloadState(ctx)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return errs
			case <-t.C:
			}
			backoff = min(2*backoff, waitBackoffMax)
		}
	}
}

// replicated checks the WAIT reply of a round that wrote something.
func replicated(stream string, wait *goredis.Cmd, w replication) error {
	n, err := wait.Int64()
	if err == nil && int(n) >= w.n {
		return nil
	}
	return &broker.PublishError{Channel: stream, Err: &ReplicationError{Channel: stream, Wanted: w.n, Acked: int(n), Timeout: w.timeout, Err: err}}
}

// retryable tells the XADD errors after which the entry was not appended
// (or, for a connection lost, may not have been) and the slot's master is
// to be looked for again.
func retryable(err error) bool {
	if _, ok := goredis.IsMovedError(err); ok {
		return true
	}
	if _, ok := goredis.IsAskError(err); ok {
		return true
	}
	if goredis.IsReadOnlyError(err) || goredis.IsClusterDownError(err) || goredis.IsTryAgainError(err) ||
		goredis.IsLoadingError(err) || goredis.IsMasterDownError(err) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, goredis.ErrPoolTimeout)
}

// nodeByAddr returns the cluster's client of the node at addr (nil when the
// cluster does not know it).
func nodeByAddr(ctx context.Context, cc *goredis.ClusterClient, addr string) *goredis.Client {
	var (
		mu    sync.Mutex
		found *goredis.Client
	)
	_ = cc.ForEachShard(ctx, func(_ context.Context, n *goredis.Client) error {
		if n.Options().Addr == addr {
			mu.Lock()
			found = n
			mu.Unlock()
		}
		return nil
	})
	return found
}

// failoverHook reloads a Cluster client's view of the slots when a command
// fails in a way a failover explains (a dead node, CLUSTERDOWN, a node that
// became a replica): go-redis reloads it on MOVED only, and otherwise every
// ClusterStateReloadInterval (60s by default), so the commands of a slot
// whose master died would keep going to the dead node until then. The
// reload is lazy (in the background, at most one at a time).
type failoverHook struct{ cc *goredis.ClusterClient }

// watchFailover adds failoverHook to a Cluster client the adapter built.
func watchFailover(c goredis.UniversalClient) {
	if cc, ok := c.(*goredis.ClusterClient); ok {
		cc.AddHook(failoverHook{cc})
	}
}

func (h failoverHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h failoverHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && retryable(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h failoverHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if e := c.Err(); e != nil && retryable(e) {
				h.cc.ReloadState(ctx)
				break
			}
		}
		return err
	}
}
