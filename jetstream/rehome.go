package jetstream

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"
)

// RehomeAfter is how long JetStream may leave an adapter's connection
// unanswered (pulls missing their idle heartbeats, sends timing out or
// finding no responder, one after another, none answered in between)
// before the adapter moves the connection to another server of the cluster
// (nats.Conn.ForceReconnect). A server cut off from the rest of its cluster
// keeps its clients connected but cannot reach the streams' and consumers'
// leaders on the other side, so its clients would wait for the partition to
// heal while the majority goes on without them. Only connections the
// adapter opened, knowing more than one server, are moved, at most once per
// RehomeAfter; a move fails the sends and pulls under way (they are retried
// or reported as for any reconnection).
const RehomeAfter = 10 * time.Second

// rehomer tracks how long the adapter's connection has gone unanswered.
type rehomer struct {
	// failing tells that since holds a failure (read on every answered
	// send without the lock).
	failing atomic.Bool
	mu      sync.Mutex
	since   time.Time // the first of the failures since the last answer
	moved   time.Time
}

// answered records a pull or send JetStream answered.
func (a *Adapter) answered() {
	if !a.rehome.failing.Load() {
		return
	}
	a.rehome.mu.Lock()
	a.rehome.since = time.Time{}
	a.rehome.failing.Store(false)
	a.rehome.mu.Unlock()
}

// unanswered records a failure of JetStream to answer on nc and moves the
// connection when that has lasted RehomeAfter.
func (a *Adapter) unanswered(nc *nats.Conn, log *slog.Logger) {
	if a.external != nil || nc == nil || len(nc.Servers()) < 2 {
		return
	}
	r := &a.rehome
	r.mu.Lock()
	now := time.Now()
	if r.since.IsZero() {
		r.since = now
		r.failing.Store(true)
	}
	since := r.since
	if now.Sub(since) < RehomeAfter || now.Sub(r.moved) < RehomeAfter {
		r.mu.Unlock()
		return
	}
	r.moved, r.since = now, time.Time{}
	r.failing.Store(false)
	r.mu.Unlock()
	if log == nil {
		log = slog.Default()
	}
	log.Warn("channels/jetstream: JetStream does not answer on this server, moving the connection to another server of the cluster",
		"server", nc.ConnectedUrlRedacted(), "for", now.Sub(since).Round(time.Millisecond))
	_ = nc.ForceReconnect()
}

// isUnanswered tells the send errors of a server that cannot reach the
// stream (no PubAck in time, no responder).
func isUnanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, js.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}
