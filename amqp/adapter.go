package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

func init() {
	broker.Register("AMQP", []string{"amqp", "amqps"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			return New(DefaultURL)
		}
		return New(u.String())
	})
}

// Adapter implements broker.Adapter on RabbitMQ (AMQP 0-9-1).
type Adapter struct {
	urls     []string
	config   amqp091.Config
	external *amqp091.Connection
	display  string

	chanOpts         ChannelOptions
	pubChannels      int
	noAssertExchange bool
	reconnect        broker.Backoff

	idPrefix string
	idSeq    atomic.Uint64

	state broker.ConnState
	// live is read without a lock on every send: nil before Connect and
	// from the start of Close.
	live atomic.Pointer[live]
	mu   sync.Mutex
	env  broker.Env
	subs broker.Subscriptions
	// groups are the groups subscribed per channel since New (RemoveChannel
	// deletes their queues: AMQP cannot list the queues bound to an
	// exchange).
	groupsMu sync.Mutex
	groups   map[string]map[string]bool
	// retries are the retry queues declared per group queue since New.
	retries map[string]map[string]bool
	// deadLetters are the dead-letter exchanges and queues of the
	// subscriptions since New (name -> true for a queue, which also has an
	// exchange of its name).
	deadLetters map[string]bool
}

// noHeaders is the table of a send without headers; it is only read.
var noHeaders = amqp091.Table{broker.HeaderRedeliveredCount: int32(0)}

// live is what one Connect..Close cycle uses: a connection for sends
// (and the copies settling publishes: retries, dead letters) and
// declarations, and one for consuming, dialed at the first Subscribe. A
// connection RabbitMQ blocks (resource alarm: it stops reading publishing
// connections), a message that closes the consuming connection, or a
// publish that makes RabbitMQ close its connection then leaves the other
// one alone: acks go on while sends wait, sends go on while consumers
// reconnect. An adapter built on a given connection uses it for both.
type live struct {
	sess *session // publishing
	pub  *publisher
	topo *topology

	cmu      sync.Mutex
	consumer *session // consuming; nil until the first Subscribe
	mkCons   func() *session
	// dialing is closed when the dial of pendingCons ends.
	dialing     chan struct{}
	pendingCons *session
	// closed: closeConsuming ran; no consuming session is opened.
	closed bool

	mu   sync.Mutex
	subs map[string]map[*subscription]struct{} // by queue
}

func (l *live) remember(s *subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = map[string]map[*subscription]struct{}{}
	}
	if l.subs[s.queue] == nil {
		l.subs[s.queue] = map[*subscription]struct{}{}
	}
	l.subs[s.queue][s] = struct{}{}
}

// forget is safe on a nil *live (the adapter closed meanwhile).
func (l *live) forget(s *subscription) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.subs[s.queue], s)
}

// consuming returns the consuming session, dialing it (bounded by ctx)
// the first time. The dial holds no lock, so closeConsuming does not wait
// for it; a session whose dial ends after closeConsuming is closed at once
// (ErrClosed).
func (l *live) consuming(ctx context.Context) (*session, error) {
	for {
		l.cmu.Lock()
		switch {
		case l.closed:
			l.cmu.Unlock()
			return nil, broker.ErrClosed
		case l.consumer != nil:
			c := l.consumer
			l.cmu.Unlock()
			return c, nil
		case l.sess.external != nil:
			l.consumer = l.sess
			l.cmu.Unlock()
			return l.sess, nil
		case l.dialing != nil:
			// Another Subscribe dials: wait for its outcome.
			dialing := l.dialing
			l.cmu.Unlock()
			select {
			case <-dialing:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		s := l.mkCons()
		dialing := make(chan struct{})
		l.dialing, l.pendingCons = dialing, s
		l.cmu.Unlock()
		err := s.start(ctx)
		l.cmu.Lock()
		l.dialing, l.pendingCons = nil, nil
		close(dialing)
		if err == nil && !l.closed {
			l.consumer = s
		}
		closed := l.closed
		l.cmu.Unlock()
		if err != nil {
			return nil, err
		}
		if closed {
			// start saw the session closed by closeConsuming and closed
			// its connection.
			return nil, broker.ErrClosed
		}
		return s, nil
	}
}

// closeConsuming closes the consuming session (when it is its own), and
// the one being dialed; no consuming session opens after it.
func (l *live) closeConsuming(ctx context.Context) error {
	l.cmu.Lock()
	l.closed = true
	c, p := l.consumer, l.pendingCons
	l.cmu.Unlock()
	if p != nil {
		// Its dial goes on in the background and closes what it opens.
		p.abort()
	}
	if c == nil || c == l.sess {
		return nil
	}
	return c.close(ctx)
}

// markRemoved tells the subscriptions of queue that it is being removed.
func (l *live) markRemoved(queue string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs[queue] {
		s.removed.Store(true)
	}
}

func (l *live) pending(queue string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for s := range l.subs[queue] {
		n += s.pending()
	}
	return n
}

var _ broker.Adapter = (*Adapter)(nil)

// New builds an adapter from an amqp:// or amqps:// URL, or a ';'-separated
// failover list of them (tried in turn, one per connection attempt). It
// does not connect.
func New(rawURL string, opts ...Option) (*Adapter, error) {
	urls, err := parseURLs(rawURL)
	if err != nil {
		return nil, err
	}
	shown := make([]string, len(urls))
	for i, u := range urls {
		shown[i] = displayURL(u)
	}
	return newAdapter(urls, nil, strings.Join(shown, ";"), opts)
}

// NewFromConnection uses an existing connection. The caller keeps its
// lifetime: Close does not close it, and when it is lost the adapter cannot
// dial it again (consumers then wait, sends fail). Channel-level failures
// are recovered as with New. A connection with amqp091's automatic
// Recovery is refused: it reopens channels in place with delivery tags
// starting again at 1, which the adapter's acknowledgements cannot tell
// from the old ones.
func NewFromConnection(conn *amqp091.Connection, opts ...Option) (*Adapter, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: amqp connection is nil", broker.ErrInvalidOption)
	}
	if conn.Config.Recovery != nil {
		return nil, fmt.Errorf("%w: amqp connection has Config.Recovery set: its channels are reopened in place with "+
			"delivery tags from 1 again, which would acknowledge the wrong messages; dial it without Recovery "+
			"(the adapter recovers channels itself)", broker.ErrInvalidOption)
	}
	return newAdapter(nil, conn, "connection", opts)
}

func newAdapter(urls []string, conn *amqp091.Connection, display string, opts []Option) (*Adapter, error) {
	a := &Adapter{urls: urls, external: conn, display: display, pubChannels: DefaultPublisherChannels,
		reconnect: broker.DefaultReconnectBackoff}
	if err := broker.ApplyOptions(a, opts); err != nil {
		return nil, err
	}
	if a.config.TLSClientConfig != nil {
		for _, u := range urls {
			if !strings.HasPrefix(strings.ToLower(u), "amqps://") {
				// amqp091 dials amqp:// in plaintext whatever the TLS
				// configuration says: the user name and password would
				// cross the network in the clear.
				return nil, fmt.Errorf("%w: amqp: a TLS configuration is set but %s is an amqp:// URL, which is dialed without TLS (credentials in plaintext): use amqps://",
					broker.ErrInvalidOption, displayURL(u))
			}
		}
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	a.idPrefix = hex.EncodeToString(b[:]) + "-"
	return a, nil
}

// Name returns "AMQP".
func (a *Adapter) Name() string { return "AMQP" }

// String describes the target without credentials.
func (a *Adapter) String() string { return "amqp " + a.display }

// Connection returns the current connection for sends and declarations
// (nil before Connect, after Close and while reconnecting).
func (a *Adapter) Connection() *amqp091.Connection {
	if l := a.live.Load(); l != nil {
		return l.sess.current()
	}
	return nil
}

// ConsumerConnection returns the current connection of the consumers (nil
// before the first Subscribe, after Close and while reconnecting). It is
// Connection() for an adapter built with NewFromConnection.
func (a *Adapter) ConsumerConnection() *amqp091.Connection {
	if l := a.live.Load(); l != nil {
		l.cmu.Lock()
		c := l.consumer
		l.cmu.Unlock()
		if c != nil {
			return c.current()
		}
	}
	return nil
}

// Connect dials RabbitMQ (each URL of the failover list once, bounded by
// ctx); a lost connection is dialed again in the background until Close.
func (a *Adapter) Connect(ctx context.Context, env broker.Env) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Connected() {
		return nil
	}
	a.env = env.Normalize()
	sess := newSession(a, a.env.Logger, "channels-publish")
	if err := sess.start(ctx); err != nil {
		return err
	}
	log := a.env.Logger
	topo := newTopology(sess)
	topo.onRetry = a.noteRetry
	a.live.Store(&live{sess: sess, pub: newPublisher(sess, a.pubChannels), topo: topo,
		mkCons: func() *session { return newSession(a, log, "channels-consume") }})
	a.state.SetConnected()
	return nil
}

// nextID returns a unique message id.
func (a *Adapter) nextID() string {
	return a.idPrefix + strconv.FormatUint(a.idSeq.Add(1), 36)
}

// Publish sends the message to the channel's fanout exchange (declared
// first, once, unless WithPublishAssertExchange(false)) and returns once
// RabbitMQ confirmed it. Messages are persistent unless the send says
// otherwise.
func (a *Adapter) Publish(ctx context.Context, channel string, msg *broker.Outgoing) error {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return err
		}
		return broker.ErrClosed // closing
	}
	r, err := a.prepare(ctx, l, channel, msg, nil)
	if err != nil {
		return err
	}
	if err := l.pub.publish(ctx, r.exchange, r.key, r.mandatory, r.exclusive, r.msg); err != nil {
		if isCode(err, amqp091.NotFound) {
			l.topo.setExchange(r.exchange, false)
		}
		return &broker.PublishError{Channel: channel, Err: err}
	}
	if r.exclusive {
		l.topo.setExchange(r.exchange, true)
	}
	return nil
}

// pubReq is one message ready for basic.publish.
type pubReq struct {
	exchange, key string
	mandatory     bool
	// exclusive: the first send to an exchange not known to exist (with
	// WithPublishAssertExchange(false)), which may close its channel.
	exclusive bool
	msg       amqp091.Publishing
}

// prepare checks the send options of msg, declares the channel's exchange
// when needed and builds the publishing. asserted, when not nil, keeps the
// outcome of each exchange declaration for the other messages of a batch.
func (a *Adapter) prepare(ctx context.Context, l *live, channel string, msg *broker.Outgoing, asserted map[string]error) (pubReq, error) {
	if err := broker.CheckOptions("amqp", msg.Options.AdapterOptions, isSendOption); err != nil {
		return pubReq{}, err
	}
	so := sendOptions(msg.Options.AdapterOptions)
	if err := so.Validate(); err != nil {
		return pubReq{}, err
	}
	r := pubReq{exchange: channel, key: so.RoutingKey, mandatory: so.Mandatory}
	if so.Queue != "" {
		r.exchange, r.key = "", so.Queue
	}
	if r.exchange != "" {
		if !a.noAssertExchange {
			err, done := asserted[r.exchange]
			if !done {
				err = l.topo.assertExchange(ctx, r.exchange, a.chanOpts.withDefaults().Exchange)
				if asserted != nil {
					asserted[r.exchange] = err
				}
			}
			if err != nil {
				return pubReq{}, &broker.PublishError{Channel: channel, Err: err}
			}
		} else if !l.topo.knownExchange(r.exchange) {
			r.exclusive = true
		}
	}
	headers := toTable(msg.Headers)
	if headers == nil {
		// @moleculer/channels 0.1.8 reads the headers table of a message it
		// retries and fails on a message without one: never send none.
		headers = noHeaders
	}
	r.msg = amqp091.Publishing{Headers: headers, DeliveryMode: amqp091.Persistent, Priority: so.Priority,
		CorrelationId: so.CorrelationID, MessageId: so.MessageID, ContentType: so.ContentType, Type: so.Type,
		Timestamp: time.Now(), Body: msg.Payload}
	if so.DeliveryMode != 0 {
		r.msg.DeliveryMode = so.DeliveryMode
	}
	if so.Expiration > 0 {
		r.msg.Expiration = strconv.FormatInt(max(int64(so.Expiration/time.Millisecond), 1), 10)
	}
	if r.msg.MessageId == "" {
		r.msg.MessageId = a.nextID()
	}
	return r, nil
}

var _ broker.BatchPublisher = (*Adapter)(nil)

// PublishBatch publishes the messages one after the other on one confirm
// channel, without waiting, and then waits for every publisher confirm: at
// most BatchWindow messages are written and not yet confirmed at a time.
// Each message gets the outcome Publish would give it: confirmed, nacked,
// returned (mandatory), or unconfirmed when the channel closed first. The
// messages keep the batch order on the broker. A batch with a mandatory
// message (or one that is the first to an exchange not known to exist)
// takes a channel of the mandatory pool to itself for its duration, and
// returned messages are told apart by their message id. A message id given
// to several messages of one batch is refused for each of them
// (ErrInvalidOption), since ids name messages to handlers and to returns.
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return broker.FailBatch(len(msgs), err)
		}
		return broker.FailBatch(len(msgs), broker.ErrClosed) // closing
	}
	errs := make([]error, len(msgs))
	reqs := make([]pubReq, 0, len(msgs))
	at := make([]int, 0, len(msgs)) // the message of each request
	asserted := map[string]error{}
	for i, m := range msgs {
		r, err := a.prepare(ctx, l, channel, m, asserted)
		if err != nil {
			errs[i] = err
			continue
		}
		reqs, at = append(reqs, r), append(at, i)
	}
	ids := make(map[string]int, len(reqs))
	for _, r := range reqs {
		ids[r.msg.MessageId]++
	}
	if len(ids) < len(reqs) {
		kept, keptAt := reqs[:0], at[:0]
		for j, r := range reqs {
			if n := ids[r.msg.MessageId]; n > 1 {
				errs[at[j]] = fmt.Errorf("%w: amqp message id %q is given to %d messages of one batch", broker.ErrInvalidOption, r.msg.MessageId, n)
				continue
			}
			kept, keptAt = append(kept, r), append(keptAt, at[j])
		}
		reqs, at = kept, keptAt
	}
	exclusive := false
	for _, r := range reqs {
		exclusive = exclusive || r.mandatory || r.exclusive
	}
	for j, err := range l.pub.publishBatch(ctx, reqs, exclusive) {
		r := reqs[j]
		if err != nil {
			if isCode(err, amqp091.NotFound) {
				l.topo.setExchange(r.exchange, false)
			}
			errs[at[j]] = &broker.PublishError{Channel: channel, Err: err}
			continue
		}
		if r.exclusive {
			l.topo.setExchange(r.exchange, true)
		}
	}
	return broker.BatchErrors(errs)
}

// Subscribe declares the channel's topology (dead-letter exchange and
// queue, channel exchange, group queue and binding), each declaration
// awaited, on the AMQP channel the consumer will use, and returns a
// subscription that has not started consuming.
func (a *Adapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	l := a.live.Load()
	if l == nil {
		return nil, broker.ErrClosed
	}
	opts, err := broker.PrepareChannel(ch, "amqp", a.chanOpts, ChannelOptions.merge, nil)
	if err != nil {
		return nil, err
	}
	// The dead-letter queue takes the adapter-wide queue options, then its own.
	opts.DeadLetterQueue = a.chanOpts.Queue.merge(opts.DeadLetterQueue)
	opts = opts.withDefaults()
	if ch.MaxInFlight > math.MaxUint16 {
		// basic.qos takes a 16-bit prefetch count: more would wrap (65,536
		// is 0, no limit at all).
		return nil, fmt.Errorf("%w: channel %q: amqp MaxInFlight must be <= %d (the prefetch count of basic.qos)",
			broker.ErrInvalidOption, ch.Name, math.MaxUint16)
	}
	gq, err := planGroupQueue(opts, ch)
	if err != nil {
		return nil, fmt.Errorf("channel %q: %w", ch.Name, err)
	}
	s := newSubscription(a, l, ch, opts, gq)
	cs, err := l.consuming(ctx)
	if err != nil {
		return nil, fmt.Errorf("channels/amqp: subscribe %q: %w", ch.Name, err)
	}
	s.cs = cs
	c := cs.current()
	if c == nil {
		return nil, fmt.Errorf("channels/amqp: subscribe %q: %w", ch.Name, errDown)
	}
	s.gq = forServer(s.gq, serverVersion(c))
	amqpCh, err := s.openChannel(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("channels/amqp: subscribe %q (group %q): %w", ch.Name, ch.Group, err)
	}
	s.setChannel(amqpCh)
	a.subs.Add(s)
	l.remember(s)
	a.groupsMu.Lock()
	if a.groups == nil {
		a.groups = map[string]map[string]bool{}
	}
	if a.groups[ch.Name] == nil {
		a.groups[ch.Name] = map[string]bool{}
	}
	a.groups[ch.Name][ch.Group] = true
	if dl := ch.DeadLetter; dl.Enabled {
		if a.deadLetters == nil {
			a.deadLetters = map[string]bool{}
		}
		if _, ok := a.deadLetters[dl.Exchange]; !ok {
			a.deadLetters[dl.Exchange] = false
		}
		a.deadLetters[dl.Queue] = true
	}
	a.groupsMu.Unlock()
	return s, nil
}

// Declared returns the queues and exchanges this adapter declared for its
// subscriptions since New: the group queues with the retry queues declared
// for them, the dead-letter queues, and the exchanges of the channels and
// of the dead-letter queues (each dead-letter queue has an exchange named
// like it). It works before Connect and after Close, for tools and tests
// that delete what a run left behind.
func (a *Adapter) Declared() (queues, exchanges []string) {
	a.groupsMu.Lock()
	defer a.groupsMu.Unlock()
	for channel, groups := range a.groups {
		exchanges = append(exchanges, channel)
		for g := range groups {
			q := QueueName(channel, g)
			queues = append(queues, q)
			for rq := range a.retries[q] {
				queues = append(queues, rq)
			}
		}
	}
	for name, isQueue := range a.deadLetters {
		exchanges = append(exchanges, name)
		if isQueue {
			queues = append(queues, name)
		}
	}
	slices.Sort(queues)
	slices.Sort(exchanges)
	return slices.Compact(queues), slices.Compact(exchanges)
}

var _ broker.ChannelRemover = (*Adapter)(nil)

// RemoveChannel deletes what the adapter declared for channel: the queues
// of the groups this adapter subscribed to it since New (with the retry
// queues it declared for them), the queue named like the channel (a
// dead-letter queue removed as a channel), and the channel's exchange.
// AMQP cannot list the queues bound to an exchange: remove the queues of
// groups this adapter never subscribed with RemoveGroup. Messages in the
// deleted queues are lost. The adapter's own consumers of a removed group
// stop (they are not resumed); their subscriptions still need their drain.
// Removing what does not exist is not an error.
func (a *Adapter) RemoveChannel(ctx context.Context, channel string) error {
	a.groupsMu.Lock()
	var groups []string
	for g := range a.groups[channel] {
		groups = append(groups, g)
	}
	a.groupsMu.Unlock()
	if err := a.RemoveGroup(ctx, channel, groups...); err != nil {
		return err
	}
	l, err := a.liveOrErr()
	if err != nil {
		return err
	}
	if err := a.deleteQueue(ctx, l, channel); err != nil {
		return fmt.Errorf("channels/amqp: remove %q: %w", channel, err)
	}
	err = l.topo.withChannel(ctx, func(ch *amqp091.Channel) error { return ch.ExchangeDelete(channel, false, false) })
	if err != nil && !isCode(err, amqp091.NotFound) {
		return fmt.Errorf("channels/amqp: remove %q: delete exchange: %w", channel, err)
	}
	l.topo.setExchange(channel, false)
	a.groupsMu.Lock()
	delete(a.groups, channel)
	a.groupsMu.Unlock()
	return nil
}

// RemoveGroup deletes the queues of the given groups on channel
// ("<group>.<channel>") and the retry queues this adapter declared for
// them since New (the others expire by themselves: x-expires). Messages in
// them are lost. This adapter's consumers of those queues stop.
func (a *Adapter) RemoveGroup(ctx context.Context, channel string, groups ...string) error {
	l, err := a.liveOrErr()
	if err != nil {
		return err
	}
	for _, g := range groups {
		q := QueueName(channel, g)
		// This adapter's consumers of the queue stop: RabbitMQ cancels them
		// with the queue, and they do not declare it again.
		l.markRemoved(q)
		a.groupsMu.Lock()
		var rqs []string
		for rq := range a.retries[q] {
			rqs = append(rqs, rq)
		}
		a.groupsMu.Unlock()
		for _, rq := range rqs {
			if err := a.deleteQueue(ctx, l, rq); err != nil {
				return fmt.Errorf("channels/amqp: remove group %q of %q: %w", g, channel, err)
			}
			l.topo.forgetRetryQueue(rq)
		}
		a.groupsMu.Lock()
		delete(a.retries, q)
		a.groupsMu.Unlock()
		if err := a.deleteQueue(ctx, l, q); err != nil {
			return fmt.Errorf("channels/amqp: remove group %q of %q: %w", g, channel, err)
		}
		a.groupsMu.Lock()
		delete(a.groups[channel], g)
		a.groupsMu.Unlock()
	}
	return nil
}

// Purge deletes the messages ready in the queue of group on channel (with
// group "", in the queue named like the channel: a dead-letter queue) and
// returns how many. Messages delivered to a consumer and not acknowledged
// yet are not purged.
func (a *Adapter) Purge(ctx context.Context, channel, group string) (int, error) {
	l, err := a.liveOrErr()
	if err != nil {
		return 0, err
	}
	q := channel
	if group != "" {
		q = QueueName(channel, group)
	}
	var n int
	err = l.topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		var err error
		n, err = ch.QueuePurge(q, false)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("channels/amqp: purge queue %q: %w", q, err)
	}
	return n, nil
}

// deleteQueue deletes queue q; a missing queue is not an error. (Quorum
// queues refuse if-unused and if-empty, with a connection error.)
func (a *Adapter) deleteQueue(ctx context.Context, l *live, q string) error {
	err := l.topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		_, err := ch.QueueDelete(q, false, false, false)
		return err
	})
	if err != nil && !isCode(err, amqp091.NotFound) {
		return fmt.Errorf("delete queue %q: %w", q, err)
	}
	return nil
}

// noteRetry records a retry queue of queue (RemoveGroup deletes it).
func (a *Adapter) noteRetry(queue, retryQueue string) {
	a.groupsMu.Lock()
	defer a.groupsMu.Unlock()
	if a.retries == nil {
		a.retries = map[string]map[string]bool{}
	}
	if a.retries[queue] == nil {
		a.retries[queue] = map[string]bool{}
	}
	a.retries[queue][retryQueue] = true
}

// liveOrErr returns the connected cycle, or why there is none.
func (a *Adapter) liveOrErr() (*live, error) {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return nil, err
		}
		return nil, broker.ErrClosed
	}
	return l, nil
}

var _ broker.LagReporter = (*Adapter)(nil)

// Lag reports the messages ready in the group queue (queue.declare passive:
// not delivered to any member yet) and, as Pending, the messages delivered
// to this adapter's consumers of the group and not settled yet (AMQP does
// not tell the unacknowledged messages of other connections).
func (a *Adapter) Lag(ctx context.Context, channel, group string) (broker.GroupLag, error) {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return broker.GroupLag{}, err
		}
		return broker.GroupLag{}, broker.ErrClosed
	}
	queue := QueueName(channel, group)
	var q amqp091.Queue
	err := l.topo.withChannel(ctx, func(ch *amqp091.Channel) error {
		var err error
		q, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		return err
	})
	if err != nil {
		return broker.GroupLag{}, fmt.Errorf("channels/amqp: queue %q: %w", queue, err)
	}
	return broker.GroupLag{Lag: int64(q.Messages), Pending: l.pending(queue)}, nil
}

// Close drains the subscriptions still running (bounded by ctx), then
// closes the publishing channels and the connection it dialed.
func (a *Adapter) Close(ctx context.Context) error {
	a.mu.Lock()
	if !a.state.Connected() {
		a.state.SetClosed()
		a.mu.Unlock()
		return nil
	}
	l := a.live.Swap(nil) // no send after this point
	a.mu.Unlock()
	errs := []error{a.subs.DrainAll(ctx)}
	a.mu.Lock()
	a.state.SetClosed()
	a.mu.Unlock()
	if l != nil {
		errs = append(errs, l.pub.close(ctx))
		var wg sync.WaitGroup
		var cerr error
		wg.Add(1)
		go func() { defer wg.Done(); cerr = l.closeConsuming(ctx) }()
		errs = append(errs, l.sess.close(ctx))
		wg.Wait()
		errs = append(errs, cerr)
	}
	return errors.Join(errs...)
}
