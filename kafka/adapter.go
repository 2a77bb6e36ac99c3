package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/microchannels/channels/broker"
)

func init() {
	broker.Register("Kafka", []string{"kafka", "kafka+ssl", "kafkas"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			return New(DefaultURL)
		}
		return New(u.String())
	})
}

// conn is what a connected adapter uses, read without a lock on every send.
type conn struct {
	client  *kafkago.Client
	queues  sync.Map // queueKey -> *queue (producer.go)
	senders [AcksNone + 1]*sender
	// buf bounds the bytes of the sends waiting or in flight (producer.go).
	buf *sendBuffer
	// leaders caches the partition leaders of the topics sent to
	// (sender.go).
	leaders sync.Map // topic -> map[int]int
	// topics remembers the partitions of the topics known to exist, so
	// that a send to a channel without a topic creates it once.
	topics sync.Map // topic -> *topicParts (producer.go)
	// writing counts the produce requests of queue.write in flight (the
	// senders count theirs in sender.inFlight).
	writing atomic.Int32
}

// Adapter implements broker.Adapter on Apache Kafka with kafka-go: a
// consumer group per channel and group, partitions read by this process
// run up to MaxInFlight messages at once, and offsets are committed only up
// to the last message processed without a gap.
type Adapter struct {
	brokers   []string
	display   string
	tls       *tls.Config
	sasl      sasl.Mechanism
	clientID  string
	acks      Acks
	batchSize int
	sendBuf   int64
	transport *kafkago.Transport
	dialer    *kafkago.Dialer
	chopts    ChannelOptions

	life kit.Lifecycle[conn]
	// groups remembers the group ids subscribed per channel (RemoveChannel).
	groups sync.Map // channel -> *sync.Map of group ids
}

var (
	_ broker.Adapter        = (*Adapter)(nil)
	_ broker.BatchPublisher = (*Adapter)(nil)
	_ broker.LagReporter    = (*Adapter)(nil)
	_ broker.ChannelRemover = (*Adapter)(nil)
	_ broker.Limiter        = (*Adapter)(nil)
)

// MaxMessageBytes is the largest message (payload, key and headers) the
// adapter lets a send write: under the broker's default message.max.bytes
// (1048588 bytes for a record batch) with room for the batch's and the
// record's own fields. A topic or broker configured lower refuses smaller
// messages itself (MESSAGE_TOO_LARGE, reported by the send).
const MaxMessageBytes = 1000000

// Limits are the size limits of the messages the adapter writes: a user's
// send over them is refused before it reaches the broker, and the headers
// of retry copies and dead letters are fitted into them.
func (a *Adapter) Limits() broker.Limits { return broker.Limits{MaxMessageBytes: MaxMessageBytes} }

// New builds an adapter from a kafka:// URL: kafka://host:port, a comma
// list of bootstrap brokers (kafka://a:9092,b:9092), user and password for
// SASL (kafka://user:pass@host:9092?sasl=scram-sha-512; PLAIN when only
// credentials are given) and tls=true (or the kafka+ssl:// scheme).
// Credentials are never shown in errors or logs. It does not connect.
func New(rawURL string, opts ...Option) (*Adapter, error) {
	brokers, display, mech, useTLS, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	a := &Adapter{brokers: brokers, display: display, sasl: mech}
	if useTLS {
		a.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return newAdapter(a, opts)
}

// NewFromBrokers builds an adapter for these bootstrap brokers (host:port).
// kafka-go has no one client object that serves both the group readers and
// the requests the adapter makes, so the Kafka adapter takes the broker
// list (and WithTransport for how to reach them) where the others take
// their driver's client (NewFromClient).
func NewFromBrokers(brokers []string, opts ...Option) (*Adapter, error) {
	if len(brokers) == 0 {
		return nil, fmt.Errorf("%w: kafka: no broker", broker.ErrInvalidOption)
	}
	a := &Adapter{brokers: append([]string(nil), brokers...)}
	a.display = "kafka://" + strings.Join(brokers, ",")
	return newAdapter(a, opts)
}

// NewWithBrokers is NewFromBrokers.
//
// Deprecated: use [NewFromBrokers].
func NewWithBrokers(brokers []string, opts ...Option) (*Adapter, error) {
	return NewFromBrokers(brokers, opts...)
}

func newAdapter(a *Adapter, opts []Option) (*Adapter, error) {
	a.acks, a.batchSize, a.sendBuf = AcksAll, DefaultBatchSize, DefaultSendBuffer
	if err := kit.ApplyOptions(a, opts); err != nil {
		return nil, err
	}
	return a, nil
}

// Name returns "Kafka".
func (a *Adapter) Name() string { return "Kafka" }

// String describes the target without credentials.
func (a *Adapter) String() string { return a.display }

// Client returns the kafka-go client of administrative requests (nil
// before Connect).
func (a *Adapter) Client() *kafkago.Client {
	if c := a.life.Load(); c != nil {
		return c.client
	}
	return nil
}

func (a *Adapter) newTransport() *kafkago.Transport {
	if u := a.transport; u != nil {
		// A transport of our own with the caller's settings: the caller's
		// value is never changed (nor its connection pool shared).
		t := &kafkago.Transport{Dial: u.Dial, DialTimeout: u.DialTimeout, IdleTimeout: u.IdleTimeout,
			MetadataTTL: u.MetadataTTL, MetadataTopics: u.MetadataTopics, ClientID: u.ClientID, TLS: u.TLS,
			SASL: u.SASL, Resolver: u.Resolver, Context: u.Context}
		if t.TLS == nil {
			t.TLS = a.tls
		}
		if t.SASL == nil {
			t.SASL = a.sasl
		}
		if t.ClientID == "" {
			t.ClientID = a.clientID
		}
		return t
	}
	return &kafkago.Transport{TLS: a.tls, SASL: a.sasl, ClientID: a.clientID, DialTimeout: 5 * time.Second,
		IdleTimeout: time.Minute}
}

func (a *Adapter) newDialer() *kafkago.Dialer {
	if a.dialer != nil {
		d := *a.dialer
		if d.TLS == nil {
			d.TLS = a.tls
		}
		if d.SASLMechanism == nil {
			d.SASLMechanism = a.sasl
		}
		return &d
	}
	return &kafkago.Dialer{Timeout: 5 * time.Second, DualStack: true, TLS: a.tls, SASLMechanism: a.sasl, ClientID: a.clientID}
}

// Connect checks that the brokers answer.
func (a *Adapter) Connect(ctx context.Context, env broker.Env) error {
	return a.life.Connect(env, func() (*conn, error) {
		if a.clientID == "" {
			a.clientID = a.life.Env.NodeID
		}
		tr := a.newTransport()
		if tr.SASL != nil && tr.SASL.Name() == "PLAIN" && tr.TLS == nil {
			a.life.Env.Logger.Warn("channels/kafka: SASL PLAIN without TLS: the password crosses the network in clear text; use kafka+ssl:// (or tls=true), or SCRAM",
				"target", a.display)
		}
		client := &kafkago.Client{Addr: kafkago.TCP(a.brokers...), Transport: tr, Timeout: DefaultOpTimeout}
		mctx, cancel := opCtx(ctx)
		defer cancel()
		if _, err := client.Metadata(mctx, &kafkago.MetadataRequest{Topics: []string{}}); err != nil {
			return nil, &connectError{target: a.display, cause: broker.Redacted(err)}
		}
		c := &conn{client: client, buf: newSendBuffer(a.sendBuf)}
		newSenders(c)
		return c, nil
	})
}

// connectError is a failed Connect; it wraps broker.ErrNotConnected and
// the cause (whose text has credentials hidden).
type connectError struct {
	target string
	cause  error
}

func (e *connectError) Error() string {
	return "channels/kafka: connect failed: " + e.target + ": " + e.cause.Error()
}

func (e *connectError) Unwrap() []error { return []error{broker.ErrNotConnected, e.cause} }

// opCtx bounds an administrative request by DefaultOpTimeout unless ctx is
// already bounded.
func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultOpTimeout)
}

func (a *Adapter) conn() (*conn, error) { return a.life.Current() }

// Publish writes one message and returns once the broker acknowledged it
// (at the adapter's or the send's Acks level). A channel without a topic
// gets one, with the adapter's topic options.
func (a *Adapter) Publish(ctx context.Context, channel string, out *broker.Outgoing) error {
	c, err := a.conn()
	if err != nil {
		return err
	}
	so, err := prepare(out)
	if err != nil {
		return err
	}
	if so.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, so.Timeout)
		defer cancel()
	}
	if err := a.ensureTopic(ctx, c, channel, a.chopts.withDefaults().Topic); err != nil {
		return &broker.PublishError{Channel: channel, Err: err}
	}
	if err := a.write(ctx, c, channel, so, out.Payload, toKafkaHeaders(out.Headers)); err != nil {
		return &broker.PublishError{Channel: channel, Err: err}
	}
	return nil
}

// prepare checks a send's options.
func prepare(out *broker.Outgoing) (SendOptions, error) {
	if err := kit.CheckOptions("kafka", out.Options.AdapterOptions, isSendOption); err != nil {
		return SendOptions{}, err
	}
	so, _ := sendOptions(out.Options.AdapterOptions)
	if k := out.Options.Key; k != "" {
		// The portable key is the record key; a different kafka key conflicts.
		if so.Key != nil && string(so.Key) != k {
			return so, &broker.ConflictError{Adapter: "Kafka", Portable: fmt.Sprintf("WithKey(%q)", k),
				Specific: fmt.Sprintf("kafka.SendOptions.Key %q", so.Key)}
		}
		so.Key = []byte(k)
	}
	return so, so.validate()
}

// PublishBatch writes msgs in produce requests shared by the messages of
// the same partition (up to the adapter's batch size each), and reports
// each message's result. Messages with a timeout of their own are written
// like single sends, concurrently with the rest.
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	c, err := a.conn()
	if err != nil {
		return kit.FailBatch(len(msgs), err)
	}
	if err := a.ensureTopic(ctx, c, channel, a.chopts.withDefaults().Topic); err != nil {
		return kit.FailBatch(len(msgs), &broker.PublishError{Channel: channel, Err: err})
	}
	errs := make([]error, len(msgs))
	var batch []kafkago.Message
	var opts []SendOptions
	var idx []int
	var wg sync.WaitGroup
	for i, out := range msgs {
		so, err := prepare(out)
		if err != nil {
			errs[i] = err
			continue
		}
		if so.Timeout > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = a.Publish(ctx, channel, out)
			}()
			continue
		}
		batch = append(batch, kafkago.Message{Key: so.Key, Value: out.Payload, Headers: toKafkaHeaders(out.Headers)})
		opts = append(opts, so)
		idx = append(idx, i)
	}
	if len(batch) > 0 {
		for j, err := range a.produce(ctx, c, channel, opts, batch) {
			if err != nil {
				errs[idx[j]] = &broker.PublishError{Channel: channel, Err: err}
			}
		}
	}
	wg.Wait()
	return broker.BatchErrors(errs)
}

// write sends one message and returns once it is acknowledged.
func (a *Adapter) write(ctx context.Context, c *conn, topic string, so SendOptions, value []byte, headers []kafkago.Header) error {
	return a.produce(ctx, c, topic, []SendOptions{so}, []kafkago.Message{{Key: so.Key, Value: value, Headers: headers}})[0]
}

func bytesOrNil(b []byte) kafkago.Bytes {
	if b == nil {
		return nil
	}
	return kafkago.NewBytes(b)
}

// Subscribe creates the channel's topic (and the dead-letter topic, with
// its own settings) when missing, and commits the start offsets of the
// partitions the group has none for (a new group: the end of each
// partition, or the beginning with FromBeginning; an existing group: the
// beginning of a partition added since), so that the group's position is
// fixed when Subscribe returns: no message sent after it is missed while
// the group forms. Then it joins the group in the background: in a group
// with members, reading starts from the member's first assignment (awaited
// at most RebalanceTimeout, off ctx), so that members subscribed one after
// the other share the partitions before the first message is read; the
// channels of a process join at once.
func (a *Adapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	c, err := a.conn()
	if err != nil {
		return nil, err
	}
	opts, err := a.prepare(ch)
	if err != nil {
		return nil, err
	}
	if err := a.ensureTopic(ctx, c, ch.Name, opts.Topic); err != nil {
		return nil, err
	}
	if ch.DeadLetter.Enabled {
		if err := a.ensureTopic(ctx, c, ch.DeadLetter.Queue, opts.DeadLetterTopic); err != nil {
			return nil, err
		}
	}
	group := GroupID(ch.Group, ch.Name)
	if err := a.pinStart(ctx, c, ch.Name, group, opts.startPosition()); err != nil {
		return nil, err
	}
	s, err := newSubscription(a, c, ch, opts, group)
	if err != nil {
		return nil, err
	}
	if err := s.join(ctx); err != nil {
		return nil, err
	}
	g, _ := a.groups.LoadOrStore(ch.Name, &sync.Map{})
	g.(*sync.Map).Store(group, struct{}{})
	a.life.Subs.Add(s)
	return s, nil
}

// GroupID is the Kafka consumer group of a channel's group, as
// @moleculer/channels names it: "<group>:<channel>".
func GroupID(group, channel string) string { return group + ":" + channel }

// Close drains the subscriptions not drained yet (bounded by ctx) and
// closes the idle connections of the transport.
func (a *Adapter) Close(ctx context.Context) error {
	return a.life.Close(ctx, func(c *conn) error {
		if t, ok := c.client.Transport.(*kafkago.Transport); ok {
			t.CloseIdleConnections()
		}
		return nil
	})
}

// prepare validates ch and resolves its options, without the brokers. A
// portable start position (ch.Start) replaces the adapter-wide
// FromBeginning; a channel's own FromBeginning conflicts with any but
// StartOldest.
func (a *Adapter) prepare(ch *broker.Channel) (ChannelOptions, error) {
	opts, err := kit.PrepareChannel(ch, "kafka", a.chopts, kit.Overlay[ChannelOptions], ChannelOptions.withDefaults)
	if err != nil || !ch.Start.IsSet() {
		return opts, err
	}
	if co, ok := kit.Option[ChannelOptions](ch); ok && co.FromBeginning && ch.Start.From != broker.FromOldest {
		return opts, &broker.ConflictError{Adapter: a.Name(), Channel: ch.Name, Portable: "Start " + ch.Start.String(),
			Specific: "kafka.ChannelOptions.FromBeginning"}
	}
	opts.FromBeginning, opts.start = false, ch.Start
	return opts, nil
}

// startPosition is where a new group starts: the portable position, else
// the oldest with FromBeginning, else the newest.
func (o ChannelOptions) startPosition() broker.StartPosition {
	switch {
	case o.start.IsSet():
		return o.start
	case o.FromBeginning:
		return broker.StartOldest
	}
	return broker.StartNewest
}

// CheckChannel validates a channel declaration without a connection
// (broker.ChannelChecker): what Subscribe checks before it creates the
// topic and joins the group.
func (a *Adapter) CheckChannel(ch *broker.Channel) error {
	c := *ch
	_, err := a.prepare(&c)
	return err
}
