package jetstream

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// subscription consumes one channel for one group: a pull loop that reads
// up to MaxInFlight messages ahead of the free slots, an in-progress loop
// for the held and running messages, and the settler of each
// delivery (acks, naks with delay, dead letters, failure records).
type subscription struct {
	*kit.Consumer
	a      *Adapter
	c      *conn
	ch     *broker.Channel
	opts   ChannelOptions
	stream string
	log    *slog.Logger

	fetchCtx  context.Context // cancelled by StopFetching
	stopFetch context.CancelFunc
	runningMu sync.Mutex
	running   map[*delivery]struct{}

	// The in-progress reports follow the consumer's live AckWait (any
	// member's options may change it): askedInterval is the option (0:
	// AckWait/3), interval the one in use (ns), lastReport the last
	// report, refreshed the last read of the consumer's configuration.
	askedInterval time.Duration
	interval      atomic.Int64
	heldEvery     atomic.Int64 // an interval lowered by a request (ns; 0: none)
	heldUntil     atomic.Int64 // when heldEvery stops holding (unix ns)
	lastReport    time.Time
	refreshed     time.Time
	refreshing    atomic.Bool
	wake          chan struct{} // the in-progress loop looks again
	beatQuit      chan struct{} // closed by finish: the in-progress loop ends
	watches       []*nats.Subscription
	// startMu orders Start and Drain: a Start either runs whole (the
	// loops started, the watches subscribed) before the drain begins, or
	// finds drainStarted and does nothing.
	startMu      sync.Mutex
	drainStarted bool

	// consMu guards cons, recs, created (replaced by reprovision and by a
	// refresh that finds the consumer created again) and drainCtx.
	consMu   sync.Mutex
	cons     js.Consumer
	recs     records
	created  time.Time
	info     atomic.Pointer[js.ConsumerInfo] // the last read of the consumer
	drainCtx context.Context
	// lastCseq is the highest consumer sequence delivered: one of the
	// consumer never goes back, a lower one comes from a consumer created
	// again under the same name.
	lastCseq atomic.Uint64
	// recreatedGen counts the consumer sequences seen going back;
	// appliedGen is the count a read of the consumer, made after them,
	// was applied for. While it is lower, records are keyed only after
	// another read (holdBatch).
	recreatedGen atomic.Uint64
	appliedGen   atomic.Uint64
	again        atomic.Bool // a refresh was asked while one ran
}

func newSubscription(a *Adapter, c *conn, ch *broker.Channel, opts ChannelOptions, stream string, cons js.Consumer, recs records) *subscription {
	fctx, cancel := context.WithCancel(context.Background())
	s := &subscription{Consumer: kit.NewConsumer(ch), a: a, c: c, ch: ch, opts: opts, stream: stream, cons: cons, recs: recs,
		log: ch.Logger, fetchCtx: fctx, stopFetch: cancel, running: map[*delivery]struct{}{},
		wake: make(chan struct{}, 1), beatQuit: make(chan struct{})}
	s.interval.Store(int64(opts.InProgressInterval))
	info := cons.CachedInfo()
	s.info.Store(info)
	s.created = info.Created
	return s
}

// Start begins fetching and the in-progress loop; it runs once. The
// in-progress loop goes on while a drain waits for slow handlers; finish
// ends it.
func (s *subscription) Start() {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if !s.drainStarted && s.Consumer.Start(s.fetchLoop) {
		s.watch()
		go s.beatLoop()
	}
}

// Drain stops the pull at once, waits for running handlers (bounded by
// ctx), flushes the acknowledgements and forgets the subscription.
func (s *subscription) Drain(ctx context.Context) error {
	s.startMu.Lock()
	s.drainStarted = true
	s.startMu.Unlock()
	return s.Consumer.Drain(ctx, kit.DrainHooks{
		StopFetching: func(ctx context.Context) {
			s.consMu.Lock()
			s.drainCtx = ctx
			s.consMu.Unlock()
			s.stopFetch()
		},
		Finish: s.finish,
	})
}

func (s *subscription) finish(ctx context.Context, _ bool) error {
	defer s.a.life.Subs.Remove(s)
	s.stopFetch()
	for _, w := range s.watches {
		_ = w.Unsubscribe()
	}
	select {
	case <-s.beatQuit:
	default:
		close(s.beatQuit)
	}
	if !s.Started() || !s.c.nc.IsConnected() || ctx.Err() != nil {
		return nil
	}
	fctx, cancel := flushCtx(ctx)
	defer cancel()
	return s.c.nc.FlushWithContext(fctx)
}

// consumer returns the consumer, its failure records and the drain's ctx
// (nil before the drain).
func (s *subscription) consumer() (js.Consumer, records, context.Context) {
	s.consMu.Lock()
	defer s.consMu.Unlock()
	return s.cons, s.recs, s.drainCtx
}

// fetchLoop keeps a pull outstanding for the messages it may hold: up to
// MaxInFlight pulled messages wait (Consumer.Hold), in order, for the next
// free slot, so a message published while the handlers run is delivered
// at once instead of after another pull. Pulled messages are tracked (and
// reported in progress) from their arrival, held ones like running ones;
// a drain hands back those that never ran, and those that reached the
// pull's inbox as it stopped.
func (s *subscription) fetchLoop() {
	var retry kit.Reconnect
	var p *puller
	for p == nil {
		var err error
		if p, err = newPuller(s.c.nc, s.stream, DurableName(s.ch.Group), s.arrive, s.orphan); err != nil {
			if !s.pullFailed(err, &retry) {
				return
			}
		}
	}
	defer func() {
		_, _, ctx := s.consumer()
		if ctx == nil {
			ctx = context.Background()
		}
		p.drain(ctx, s.holdBatch)
	}()
	for {
		n, ok := s.AwaitFetch()
		if !ok {
			return
		}
		n, expires := s.pullLimits(n)
		err := p.fetch(s.fetchCtx, n, expires, heartbeatFor(expires), s.holdBatch)
		if s.IsStopping() {
			return
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			if errors.Is(err, errPullSilent) {
				s.a.unanswered(s.c.nc, s.log)
			}
			if !s.pullFailed(err, &retry) {
				return
			}
			continue
		}
		s.a.answered()
		retry.Succeeded()
	}
}

// pullLimits bounds a pull of n messages by the consumer's own limits
// (MaxRequestBatch, MaxRequestExpires), which the server enforces by
// refusing the pull.
func (s *subscription) pullLimits(n int) (int, time.Duration) {
	expires := s.opts.FetchTimeout
	if info := s.info.Load(); info != nil {
		if b := info.Config.MaxRequestBatch; b > 0 && n > b {
			n = b
		}
		if e := info.Config.MaxRequestExpires; e > 0 && expires > e {
			expires = e
		}
	}
	return n, expires
}

// arrive tracks a stream message as it reaches the pull's inbox.
func (s *subscription) arrive(m *nats.Msg) *delivery {
	return s.delivery(&rawMsg{Msg: m, nc: s.c.nc})
}

// orphan logs a stream message that answers a pull the server was no more
// expected to answer; it is tracked and handed over like any other.
func (s *subscription) orphan(m *nats.Msg) {
	s.log.Debug("channels/jetstream: a message answers a pull given up; it is delivered all the same",
		"channel", s.ch.Name, "group", s.ch.Group, "ack", m.Reply)
}

// pullFailed logs a failed pull, recreates the stream and consumer when
// they are gone, reads the consumer again when the server refused the
// pull, and waits before the next try; false when draining.
func (s *subscription) pullFailed(err error, retry *kit.Reconnect) bool {
	s.log.Warn("channels/jetstream: pull failed, retrying", "channel", s.ch.Name, "group", s.ch.Group,
		"error", err, "in", retry.Next())
	var status *pullStatusError
	switch {
	case errors.Is(err, js.ErrConsumerNotFound) || errors.Is(err, js.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders):
		s.reprovision()
	case errors.As(err, &status), errors.Is(err, errPullSilent):
		s.refresh() // its limits (MaxRequestBatch, ...) may have changed
	}
	_, ok := retry.Failed(s.Stopping())
	return ok
}

// minPullExpiry bounds the wait for the messages that reached the pull's
// inbox as it stopped.
const minPullExpiry = time.Second

// reprovision recreates the stream and the consumer after they were
// deleted (by an operator, or a server that lost its store).
func (s *subscription) reprovision() {
	ctx, cancel := context.WithTimeout(s.fetchCtx, DefaultOpTimeout)
	defer cancel()
	stream, err := ensureStream(ctx, s.c.js, s.ch.Name, s.opts.Stream)
	if err == nil {
		var cons js.Consumer
		if cons, err = ensureConsumer(ctx, s.c.js, stream, s.ch.Name, s.ch.Group, s.opts, s.MaxInFlight()); err == nil {
			s.consMu.Lock()
			s.cons = cons
			s.consMu.Unlock()
			s.applyInfo(cons.CachedInfo())
		}
	}
	if err != nil {
		s.log.Warn("channels/jetstream: recreating the stream and consumer failed", "channel", s.ch.Name, "error", err)
	}
}
