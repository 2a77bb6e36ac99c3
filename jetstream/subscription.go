package jetstream

import (
	"context"
	"encoding/json"
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
	wake          chan struct{} // the in-progress loop looks again
	beatQuit      chan struct{} // closed by finish: the in-progress loop ends
	watches       []*nats.Subscription

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
	again    atomic.Bool // a refresh was asked while one ran
}

func newSubscription(a *Adapter, c *conn, ch *broker.Channel, opts ChannelOptions, stream string, cons js.Consumer, recs records) *subscription {
	fctx, cancel := context.WithCancel(context.Background())
	s := &subscription{Consumer: broker.NewConsumer(ch), a: a, c: c, ch: ch, opts: opts, stream: stream, cons: cons, recs: recs,
		log: ch.Logger, fetchCtx: fctx, stopFetch: cancel, running: map[*delivery]struct{}{},
		wake: make(chan struct{}, 1), beatQuit: make(chan struct{})}
	s.interval.Store(int64(opts.InProgressInterval))
	info := cons.CachedInfo()
	s.info.Store(info)
	s.created = info.Created
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

// refreshEvery is how often, while messages run, the consumer's
// configuration is read again (besides the reads the consumer's API
// requests and advisories trigger): half its AckWait, at least
// minRefreshEvery.
func refreshEvery(ackWait time.Duration) time.Duration {
	return max(ackWait/2, minRefreshEvery)
}

const minRefreshEvery = 5 * time.Second

// Start begins fetching and the in-progress loop; it runs once. The
// in-progress loop goes on while a drain waits for slow handlers; finish
// ends it.
func (s *subscription) Start() {
	if s.Consumer.Start(s.fetchLoop) {
		s.watch()
		go s.beatLoop()
	}
}

// Drain stops the pull at once, waits for running handlers (bounded by
// ctx), flushes the acknowledgements and forgets the subscription.
func (s *subscription) Drain(ctx context.Context) error {
	return s.Consumer.Drain(ctx, broker.DrainHooks{
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
	defer s.a.subs.Remove(s)
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
	var retry broker.Reconnect
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
			if !s.pullFailed(err, &retry) {
				return
			}
			continue
		}
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
func (s *subscription) pullFailed(err error, retry *broker.Reconnect) bool {
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
		if cons, err = ensureConsumer(ctx, s.c.js, stream, s.ch.Name, DurableName(s.ch.Group), s.opts, s.MaxInFlight()); err == nil {
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

// watch listens for what changes the consumer under this member: the
// consumer API requests of other members (an update may lower AckWait:
// the running messages are reported in progress at once and the
// configuration is read again), its creation and deletion (its failure
// records start over), and the server's MAX_DELIVERIES advisory (a
// message the server stopped delivering is logged). Where the account's
// permissions forbid these subjects the slow refresh alone applies.
func (s *subscription) watch() {
	durable := DurableName(s.ch.Group)
	on := func(subject string, fn nats.MsgHandler) {
		if w, err := s.c.nc.Subscribe(subject, fn); err == nil {
			s.watches = append(s.watches, w)
		}
	}
	changing := func(*nats.Msg) {
		s.reportNow()
		go s.refresh()
		// The request reaches the server as it reaches us: read the
		// configuration again once the server has applied it.
		time.AfterFunc(100*time.Millisecond, s.refresh)
	}
	changed := func(*nats.Msg) { go s.refresh() }
	api := "$JS.API.CONSUMER."
	on(api+"CREATE."+s.stream+"."+durable, changing)
	on(api+"CREATE."+s.stream+"."+durable+".>", changing)
	on(api+"DURABLE.CREATE."+s.stream+"."+durable, changing)
	on("$JS.EVENT.ADVISORY.CONSUMER.CREATED."+s.stream+"."+durable, changed)
	on("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+s.stream+"."+durable, s.maxDeliveries)
}

// maxDeliveries logs the server's advisory of a message it stopped
// delivering (MaxDeliver reached): the message stays in the stream,
// neither handled nor dead-lettered.
func (s *subscription) maxDeliveries(m *nats.Msg) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries uint64 `json:"deliveries"`
	}
	_ = json.Unmarshal(m.Data, &adv)
	s.log.Error("channels/jetstream: the server stopped delivering a message (the consumer's MaxDeliver): it stays in the stream, neither handled nor dead-lettered",
		"channel", s.ch.Name, "group", s.ch.Group, "stream", s.stream, "stream_seq", adv.StreamSeq, "deliveries", adv.Deliveries)
}

// beatLoop reports the tracked messages in progress when a report is due
// and reads the consumer's configuration again while messages run; it
// sleeps while none is tracked, until a message arrives.
func (s *subscription) beatLoop() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		var due <-chan time.Time
		if wait := s.inProgress(); wait > 0 {
			t.Reset(wait)
			due = t.C
		}
		select {
		case <-due:
		case <-s.wake:
		case <-s.beatQuit:
			t.Stop()
			return
		}
		t.Stop()
	}
}

func (s *subscription) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// inProgress tells the server that the tracked messages are being worked
// on, so a handler longer than AckWait keeps its message, when a report is
// due; it starts a read of the consumer's configuration when one is due.
// It returns the time until the next report or read (0: nothing tracked).
func (s *subscription) inProgress() time.Duration {
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	if len(s.running) == 0 {
		return 0
	}
	now := time.Now()
	every := time.Duration(s.interval.Load())
	refresh := refreshEvery(s.info.Load().Config.AckWait)
	if now.Sub(s.refreshed) >= refresh {
		s.refreshed = now
		go s.refresh()
	}
	if now.Sub(s.lastReport) >= every {
		s.lastReport = now
		for d := range s.running {
			_ = d.m.InProgress()
		}
	}
	return max(min(s.lastReport.Add(every).Sub(now), s.refreshed.Add(refresh).Sub(now)), time.Millisecond)
}

// reportNow reports every tracked message in progress at once.
func (s *subscription) reportNow() {
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	if len(s.running) == 0 {
		return
	}
	s.lastReport = time.Now()
	for d := range s.running {
		_ = d.m.InProgress()
	}
}

// refresh reads the consumer's configuration (one read at a time; one
// asked while another runs is made after it).
func (s *subscription) refresh() {
	s.again.Store(true)
	for s.again.Load() && s.refreshing.CompareAndSwap(false, true) {
		s.again.Store(false)
		s.readConsumer()
		s.refreshing.Store(false)
	}
}

// readConsumer reads the consumer and applies what it finds.
func (s *subscription) readConsumer() {
	cons, _, _ := s.consumer()
	ctx, cancel := context.WithTimeout(s.fetchCtx, DefaultOpTimeout)
	defer cancel()
	if info, err := cons.Info(ctx); err == nil {
		s.applyInfo(info)
	}
}

// applyInfo takes a read of the consumer: the in-progress interval
// follows its AckWait, and a consumer created again (another Created
// time: its sequences start over) gets records of its own; a read older
// than the last one applied does not take them back.
func (s *subscription) applyInfo(info *js.ConsumerInfo) {
	s.info.Store(info)
	s.consMu.Lock()
	if info.Created.After(s.created) {
		s.created = info.Created
		s.recs = newRecords(s.recs.kv, s.stream, DurableName(s.ch.Group), info.Created)
		s.log.Debug("channels/jetstream: the consumer was created again; its failure records start over",
			"channel", s.ch.Name, "group", s.ch.Group, "created", info.Created)
	}
	s.consMu.Unlock()
	every := inProgressEvery(info.Config.AckWait, s.askedInterval)
	if old := time.Duration(s.interval.Swap(int64(every))); old != every {
		s.log.Debug("channels/jetstream: in-progress interval follows the consumer's AckWait",
			"channel", s.ch.Name, "group", s.ch.Group, "ack_wait", info.Config.AckWait, "interval", every)
		s.poke()
	}
}

func (s *subscription) track(d *delivery) {
	s.runningMu.Lock()
	first := len(s.running) == 0
	s.running[d] = struct{}{}
	s.runningMu.Unlock()
	if first {
		s.poke()
	}
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
	// recreated: its consumer sequence is below one seen before: the
	// consumer was created again.
	recreated bool
}

// recordReadTimeout bounds the read of a failure record in the fetch path:
// the messages behind it wait for it.
func (s *subscription) recordReadTimeout() time.Duration {
	return min(max(s.opts.InProgressInterval, 100*time.Millisecond), DefaultOpTimeout)
}

// holdBatch hands messages received together to the kit, in order. Each
// is reported in progress from its arrival; the failure records of the
// redelivered ones are read concurrently (each bounded by
// recordReadTimeout), so a slow read does not hold the others back.
func (s *subscription) holdBatch(ds []*delivery) {
	for _, d := range ds {
		if d.recreated {
			// Its consumer is not the one the records are keyed by: read
			// it, and key every message of the batch by it.
			s.readConsumer()
			_, recs, _ := s.consumer()
			for _, d := range ds {
				d.recs = recs
			}
			break
		}
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
	_, recs, _ := s.consumer()
	d := &delivery{s: s, m: m, recs: recs, known: true}
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
		// Arrivals come one at a time (the inbox's callback).
		last := s.lastCseq.Swap(meta.Sequence.Consumer)
		d.recreated = meta.Sequence.Consumer <= last
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
	if err := setHeaders(m.Header, headers, len(payload) == 0); err != nil {
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
