package jetstream

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

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// subscription consumes one channel for one group: a pull loop that reads
// up to MaxInFlight messages ahead of the free slots, an in-progress loop
// for the held and running messages, and the settler of each
// delivery (acks, naks with delay, dead letters, failure records).
type subscription struct {
	*broker.Consumer
	a      *Adapter
	c      *conn
	ch     *broker.Channel
	opts   ChannelOptions
	stream string
	cons   js.Consumer
	recs   records
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
	lastReport    time.Time
	refreshed     time.Time
	refreshing    atomic.Bool
	consMu        sync.Mutex // cons: replaced by reprovision, read by refresh
}

func newSubscription(a *Adapter, c *conn, ch *broker.Channel, opts ChannelOptions, stream string, cons js.Consumer, recs records) *subscription {
	fctx, cancel := context.WithCancel(context.Background())
	s := &subscription{Consumer: broker.NewConsumer(ch), a: a, c: c, ch: ch, opts: opts, stream: stream, cons: cons, recs: recs,
		log: ch.Logger, fetchCtx: fctx, stopFetch: cancel, running: map[*delivery]struct{}{}}
	s.interval.Store(int64(opts.InProgressInterval))
	return s
}

// inProgressEvery is the in-progress interval for a consumer's AckWait:
// the asked one when set and shorter than AckWait/3, else AckWait/3.
func inProgressEvery(ackWait, asked time.Duration) time.Duration {
	every := max(ackWait/3, 10*time.Millisecond)
	if asked > 0 && asked < every {
		every = asked
	}
	return every
}

// inProgressTick is how often the in-progress beat looks whether a report
// is due: short enough for the shortest AckWait a member may set (100 ms),
// so that a shorter AckWait set by another member is followed at once.
const inProgressTick = 50 * time.Millisecond

// refreshEvery is how often, while messages run, the consumer's live
// AckWait is read again.
const refreshEvery = time.Second

// Start begins fetching; it runs once. The in-progress beat runs on the
// kit's Beat: it goes on while a drain waits for slow handlers.
func (s *subscription) Start() {
	if s.Consumer.Start(s.fetchLoop) {
		s.Beat(min(s.opts.InProgressInterval, inProgressTick), s.inProgress)
	}
}

// Drain stops the pull at once, waits for running handlers (bounded by
// ctx), flushes the acknowledgements and forgets the subscription.
func (s *subscription) Drain(ctx context.Context) error {
	return s.Consumer.Drain(ctx, broker.DrainHooks{
		StopFetching: func(context.Context) { s.stopFetch() },
		Finish:       s.finish,
	})
}

func (s *subscription) finish(ctx context.Context, _ bool) error {
	defer s.a.subs.Remove(s)
	s.stopFetch()
	if !s.Started() || !s.c.nc.IsConnected() || ctx.Err() != nil {
		return nil
	}
	fctx, cancel := flushCtx(ctx)
	defer cancel()
	return s.c.nc.FlushWithContext(fctx)
}

// fetchLoop keeps a pull outstanding for the messages it may hold: up to
// MaxInFlight pulled messages wait (Consumer.Hold), in order, for the next
// free slot, so a message published while the handlers run is delivered
// at once instead of after another pull. Held messages are reported in
// progress like running ones; a drain hands back those that never ran,
// and those that reached the pull's inbox as it stopped.
func (s *subscription) fetchLoop() {
	var retry broker.Reconnect
	hold := s.holdBatch
	var p *puller
	for p == nil {
		var err error
		if p, err = newPuller(s.c.nc, s.stream, DurableName(s.ch.Group)); err != nil {
			if !s.pullFailed(err, &retry) {
				return
			}
		}
	}
	defer p.drain(hold)
	for {
		n, ok := s.AwaitFetch()
		if !ok {
			return
		}
		err := p.fetch(s.fetchCtx, n, s.opts.FetchTimeout, hold)
		if s.IsStopping() {
			return
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			if !s.pullFailed(err, &retry) {
				return
			}
			continue
		}
		retry.Succeeded()
	}
}

// pullFailed logs a failed pull, recreates the stream and consumer when
// they are gone, and waits before the next try; false when draining.
func (s *subscription) pullFailed(err error, retry *broker.Reconnect) bool {
	s.log.Warn("channels/jetstream: pull failed, retrying", "channel", s.ch.Name, "group", s.ch.Group,
		"error", err, "in", retry.Next())
	if errors.Is(err, js.ErrConsumerNotFound) || errors.Is(err, js.ErrConsumerDeleted) || errors.Is(err, nats.ErrNoResponders) {
		s.reprovision()
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
		if cons, err = ensureConsumer(ctx, s.c.js, stream, s.ch.Name, DurableName(s.ch.Group), s.opts, s.MaxInFlight()); err == nil {
			s.consMu.Lock()
			s.cons = cons
			s.consMu.Unlock()
			s.recs = newRecords(s.recs.kv, stream, DurableName(s.ch.Group), cons.CachedInfo().Created)
		}
	}
	if err != nil {
		s.log.Warn("channels/jetstream: recreating the stream and consumer failed", "channel", s.ch.Name, "error", err)
	}
}

// inProgress tells the server that the running messages are being
// worked on, so a handler longer than AckWait keeps its message. It
// reports every interval; while messages run, it reads the consumer's
// AckWait again every refreshEvery (in the background) and adapts the
// interval to it.
func (s *subscription) inProgress() {
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	if len(s.running) == 0 {
		return
	}
	now := time.Now()
	if now.Sub(s.refreshed) >= refreshEvery && s.refreshing.CompareAndSwap(false, true) {
		s.refreshed = now
		go s.refreshInterval()
	}
	if now.Sub(s.lastReport) < time.Duration(s.interval.Load()) {
		return
	}
	s.lastReport = now
	for d := range s.running {
		_ = d.m.InProgress()
	}
}

// refreshInterval reads the consumer's live AckWait and sets the interval.
func (s *subscription) refreshInterval() {
	defer s.refreshing.Store(false)
	s.consMu.Lock()
	cons := s.cons
	s.consMu.Unlock()
	ctx, cancel := context.WithTimeout(s.fetchCtx, DefaultOpTimeout)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	every := inProgressEvery(info.Config.AckWait, s.askedInterval)
	if old := time.Duration(s.interval.Swap(int64(every))); old != every {
		s.log.Debug("channels/jetstream: in-progress interval follows the consumer's AckWait",
			"channel", s.ch.Name, "group", s.ch.Group, "ack_wait", info.Config.AckWait, "interval", every)
	}
}

func (s *subscription) track(d *delivery) {
	s.runningMu.Lock()
	s.running[d] = struct{}{}
	s.runningMu.Unlock()
}

func (s *subscription) untrack(d *delivery) {
	s.runningMu.Lock()
	delete(s.running, d)
	s.runningMu.Unlock()
}

// delivery is one pulled message handed to the kit: the kit's delivery,
// its message and the settler in one allocation.
type delivery struct {
	broker.Delivery
	msg    broker.Message
	s      *subscription
	m      js.Msg
	seq    uint64
	recs   records // of the consumer that delivered it
	rec    record
	hasRec bool // a record may exist: delete it with the ack
	known  bool // rec is what the bucket holds (read, or none can exist)
	// needsRecord: delivered before, its record is to be read.
	needsRecord bool
}

// recordReadTimeout bounds the read of a failure record in the fetch path:
// the messages behind it wait for it.
func (s *subscription) recordReadTimeout() time.Duration {
	return min(max(s.opts.InProgressInterval, 100*time.Millisecond), DefaultOpTimeout)
}

// holdBatch hands messages received together to the kit, in order. Each
// is reported in progress from the start; the failure records of the
// redelivered ones are read concurrently (each bounded by
// recordReadTimeout), so a slow read does not hold the others back.
func (s *subscription) holdBatch(ms []js.Msg) {
	ds := make([]*delivery, len(ms))
	for i, m := range ms {
		ds[i] = s.delivery(m)
	}
	var wg sync.WaitGroup
	for _, d := range ds {
		if d.needsRecord {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.readRecord(d)
			}()
		}
	}
	wg.Wait()
	for _, d := range ds {
		s.Hold(&d.Delivery)
	}
}

// delivery builds the kit's delivery, reported in progress at once: the
// attempt is 1 + the failed runs recorded, the deliveries the server's
// NumDelivered less the releases (readRecord completes both for a message
// delivered before).
func (s *subscription) delivery(m js.Msg) *delivery {
	d := &delivery{s: s, m: m, recs: s.recs, known: true}
	s.track(d)
	msg := &d.msg
	msg.SetSerializer(s.ch.Serializer)
	msg.Channel, msg.Group, msg.Payload, msg.Raw, msg.Attempt = s.ch.Name, s.ch.Group, m.Data(), m, 1
	if meta, err := m.Metadata(); err == nil {
		d.seq = meta.Sequence.Stream
		msg.ID = strconv.FormatUint(d.seq, 10)
		msg.Timestamp = meta.Timestamp
		d.Deliveries = int(meta.NumDelivered)
		d.needsRecord = meta.NumDelivered > 1
	}
	if h := m.Headers(); len(h) > 0 {
		msg.Headers = make(map[string]string, len(h))
		for k, vs := range h {
			if len(vs) == 0 || strings.HasPrefix(k, headerPrefixNATS) {
				continue
			}
			msg.Headers[k] = vs[0]
		}
	}
	d.Delivery.Msg, d.Delivery.Settle = msg, d
	return d
}

// readRecord reads the failure record of a message delivered before.
func (s *subscription) readRecord(d *delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), s.recordReadTimeout())
	rec, ok, err := d.recs.load(ctx, d.seq)
	cancel()
	d.hasRec = ok || err != nil // unread: the ack clears it anyway
	switch {
	case err != nil:
		d.known = false
		s.log.Warn("channels/jetstream: reading the failure record failed; counting from the delivery counter",
			"channel", s.ch.Name, "id", d.msg.ID, "error", err)
	case ok:
		d.rec = rec
		d.msg.Attempt = 1 + rec.Failures
		d.Deliveries = max(d.Deliveries-rec.Releases, 1)
		d.Final, d.Failure = rec.Final, rec.Failure
	}
}

func (t *delivery) Ack(ctx context.Context) error {
	t.s.untrack(t)
	var err error
	if t.s.opts.AckSync {
		actx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
		err = t.m.DoubleAck(actx)
		cancel()
	} else {
		err = t.m.Ack()
	}
	if err == nil && t.hasRec {
		rctx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
		if rerr := t.recs.remove(rctx, t.seq); rerr != nil {
			t.s.log.Warn("channels/jetstream: deleting a failure record failed; it expires with the bucket TTL",
				"channel", t.s.ch.Name, "id", t.msg.ID, "error", rerr)
		}
		cancel()
	}
	return err
}

func (t *delivery) Retry(ctx context.Context, delay time.Duration, failure map[string]string) error {
	t.s.untrack(t)
	// Record the failed run before the nak, so that whichever member gets
	// the message next sees the attempt.
	return t.update(ctx, func(rec *record) { rec.Failures++; rec.Failure = failure }, func() error { return t.m.NakWithDelay(delay) })
}

// update writes the message's record changed by change, then hands the
// message back with nak. A record that could not be read at the delivery
// is read again first; when it still cannot be, nothing is written (a
// record started from zero would overwrite the count kept there) and the
// message is handed back all the same.
func (t *delivery) update(ctx context.Context, change func(*record), nak func() error) error {
	if !t.known {
		rec, ok, err := t.recs.load(ctx, t.seq)
		if err != nil {
			return errors.Join(fmt.Errorf("channels/jetstream: failure record unreadable, not updated: %w", err), nak())
		}
		t.known = true
		if ok {
			t.rec = rec
		}
	}
	rec := t.rec
	change(&rec)
	err := t.recs.store(ctx, t.seq, rec)
	if err == nil {
		t.rec, t.hasRec = rec, true
	}
	return errors.Join(err, nak())
}

func (t *delivery) DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error {
	m := nats.NewMsg(t.s.ch.DeadLetter.Queue)
	m.Data = payload
	if err := setHeaders(m.Header, headers); err != nil {
		return err
	}
	// One id per message of one consumer: a dead letter published again
	// after a lost acknowledgement is stored once (within the dead-letter
	// stream's Duplicates window).
	m.Header.Set(nats.MsgIdHdr, "channels-dl."+t.recs.key(t.seq))
	_, err := t.s.c.js.PublishMsg(ctx, m)
	if errors.Is(err, js.ErrNoStreamResponse) && t.s.c.nc.IsConnected() {
		if _, serr := ensureStream(ctx, t.s.c.js, t.s.ch.DeadLetter.Queue, deadLetterStream(t.s.opts.DeadLetterStream)); serr == nil {
			_, err = t.s.c.js.PublishMsg(ctx, m)
		}
	}
	return err
}

func (t *delivery) Keep(ctx context.Context, failure map[string]string) error {
	t.s.untrack(t)
	return t.update(ctx, func(rec *record) { rec.Final, rec.Failure = true, failure },
		func() error { return t.m.NakWithDelay(DefaultKeepDelay) })
}

func (t *delivery) Release(ctx context.Context) error {
	t.s.untrack(t)
	return t.update(ctx, func(rec *record) { rec.Releases++ }, t.m.Nak)
}
