package jetstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

func init() {
	broker.Register("NATS", []string{"nats", "tls"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			return New(DefaultURL)
		}
		return New(u.String())
	})
}

// headerPrefixNATS marks the transport headers of NATS (Nats-Msg-Id,
// Nats-Expected-*, ...): they are not handed to handlers as message
// headers (Message.Raw has them) and not copied to dead letters.
const headerPrefixNATS = "Nats-"

// conn is what a connected adapter uses, read without a lock on every send.
type conn struct {
	nc  *nats.Conn
	js  js.JetStream
	ser broker.Serializer
}

// Adapter implements broker.Adapter on NATS JetStream with pull consumers.
type Adapter struct {
	servers   []string
	display   string
	external  *nats.Conn
	natsOpts  []nats.Option
	tlsConfig *tls.Config    // WithTLS (a copy)
	rootCAs   *x509.CertPool // WithRootCAs
	chopts    ChannelOptions
	bucket    string
	recordTTL time.Duration
	replicas  int // WithReplicas
	rehome    rehomer

	life kit.Lifecycle[conn]
	kv   js.KeyValue
	// streams maps a channel sent to to the stream that acknowledged its
	// sends (a string), so that a send to a channel without a stream
	// creates it once and one whose stream is gone knows which it was.
	streams sync.Map
	// streamOf maps a subscribed channel to its stream (for Lag).
	streamOf sync.Map
}

var _ broker.Adapter = (*Adapter)(nil)

// New builds an adapter from a nats:// or tls:// URL, or a comma-separated
// list of them (the servers of one cluster). User, password or token in
// the URL are used to connect and never shown in errors or logs. It does
// not connect.
func New(rawURL string, opts ...Option) (*Adapter, error) {
	servers, display, err := parseURLs(rawURL)
	if err != nil {
		return nil, err
	}
	return newAdapter(&Adapter{servers: servers, display: display}, opts)
}

// NewFromClient uses an existing connection. The caller keeps its lifetime:
// Close does not close it (it flushes it).
func NewFromClient(nc *nats.Conn, opts ...Option) (*Adapter, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: jetstream connection is nil", broker.ErrInvalidOption)
	}
	return newAdapter(&Adapter{external: nc, display: "connection"}, opts)
}

// NewFromConn is NewFromClient.
//
// Deprecated: use [NewFromClient], the name every adapter uses.
func NewFromConn(nc *nats.Conn, opts ...Option) (*Adapter, error) { return NewFromClient(nc, opts...) }

func newAdapter(a *Adapter, opts []Option) (*Adapter, error) {
	a.bucket, a.recordTTL = DefaultRecordsBucket, DefaultRecordTTL
	if err := kit.ApplyOptions(a, opts); err != nil {
		return nil, err
	}
	return a, nil
}

// Name returns "NATS".
func (a *Adapter) Name() string { return "NATS" }

// String describes the target without credentials.
func (a *Adapter) String() string { return "nats " + a.display }

// Conn returns the connection (nil before Connect).
func (a *Adapter) Conn() *nats.Conn {
	if c := a.life.Load(); c != nil {
		return c.nc
	}
	return nil
}

// JetStream returns the JetStream context (nil before Connect).
func (a *Adapter) JetStream() js.JetStream {
	if c := a.life.Load(); c != nil {
		return c.js
	}
	return nil
}

// Connect connects (when the adapter owns the connection) and checks that
// JetStream answers.
func (a *Adapter) Connect(ctx context.Context, env broker.Env) error {
	return a.life.Connect(env, func() (*conn, error) { return a.dial(ctx) })
}

// dial opens the connection (or takes the caller's) and checks JetStream.
func (a *Adapter) dial(ctx context.Context) (*conn, error) {
	nc := a.external
	if nc == nil {
		opts := []nats.Option{nats.Name(a.life.Env.NodeID), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
			// Sends fail at once while the connection is down, instead of
			// waiting in a buffer for a reconnection that may not come.
			nats.ReconnectBufSize(-1)}
		if d, ok := ctx.Deadline(); ok {
			opts = append(opts, nats.Timeout(max(time.Until(d), 100*time.Millisecond)))
		}
		if t := a.tlsOption(); t != nil {
			opts = append(opts, t)
		}
		var err error
		nc, err = nats.Connect(strings.Join(a.servers, ","), append(opts, a.natsOpts...)...)
		if err != nil {
			return nil, fmt.Errorf("channels/jetstream: connect %s: %w", a.display, broker.Redacted(err))
		}
	}
	j, err := js.New(nc)
	if err == nil {
		_, err = j.AccountInfo(ctx)
	}
	if err != nil {
		if a.external == nil {
			nc.Close()
		}
		return nil, fmt.Errorf("channels/jetstream: JetStream on %s: %w", a.display, err)
	}
	a.kv = nil
	return &conn{nc: nc, js: j, ser: a.life.Env.Serializer}, nil
}

// records opens the failure-record bucket once per connection.
func (a *Adapter) records(ctx context.Context, c *conn) (js.KeyValue, error) {
	a.life.Mu.Lock()
	defer a.life.Mu.Unlock()
	if a.kv != nil {
		return a.kv, nil
	}
	kv, err := openRecords(ctx, c.js, a.bucket, js.KeyValueConfig{TTL: a.recordTTL, Replicas: a.replicas, Description: "channels: failed runs and kept failures per group and message"})
	if err != nil {
		return nil, err
	}
	a.kv = kv
	return kv, nil
}

// Subscribe creates or updates the channel's stream, the dead-letter
// stream and the group's durable pull consumer, and returns a subscription
// that is not started.
func (a *Adapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	c, err := a.life.Current()
	if err != nil {
		return nil, err
	}
	opts, err := a.prepare(ch)
	if err != nil {
		return nil, err
	}
	if opts.Stream.Replicas == 0 {
		opts.Stream.Replicas = a.replicas
	}
	if opts.DeadLetterStream.Replicas == 0 {
		opts.DeadLetterStream.Replicas = a.replicas
	}
	stream, err := ensureStream(ctx, c.js, ch.Name, opts.Stream)
	if err != nil {
		return nil, err
	}
	if l := a.Limits(); ch.Limits.MaxMessageBytes == 0 || l.MaxMessageBytes < ch.Limits.MaxMessageBytes {
		ch.Limits.MaxMessageBytes = l.MaxMessageBytes
	}
	if ch.Limits.MaxHeaderBytes == 0 || MaxHeaderBytes < ch.Limits.MaxHeaderBytes {
		ch.Limits.MaxHeaderBytes = MaxHeaderBytes
	}
	if ch.DeadLetter.Enabled {
		_, dl, err := ensureStreamConfig(ctx, c.js, ch.DeadLetter.Queue, deadLetterStream(opts.DeadLetterStream))
		if err != nil {
			return nil, err
		}
		// A dead letter over the stream's MaxMsgSize is refused by the
		// server: the kit fits the copy's headers into the lower bound.
		if dl.MaxMsgSize > 0 && (ch.Limits.MaxMessageBytes == 0 || int(dl.MaxMsgSize) < ch.Limits.MaxMessageBytes) {
			ch.Limits.MaxMessageBytes = int(dl.MaxMsgSize)
		}
	}
	a.streamOf.Store(ch.Name, stream)
	durable := DurableName(ch.Group)
	cons, err := ensureConsumer(ctx, c.js, stream, ch.Name, ch.Group, opts, ch.MaxInFlight)
	if err != nil {
		return nil, err
	}
	kv, err := a.records(ctx, c)
	if err != nil {
		return nil, err
	}
	asked := opts.InProgressInterval
	opts.InProgressInterval = inProgressEvery(ackWaitOf(cons.CachedInfo().Config.AckWait, cons.CachedInfo().Config.BackOff), asked)
	s := newSubscription(a, c, ch, opts, stream, cons, newRecords(kv, stream, durable, cons.CachedInfo().Created))
	s.askedInterval = asked
	a.life.Subs.Add(s)
	return s, nil
}

// Close drains the subscriptions still running (bounded by ctx), flushes
// the connection and closes it when the adapter opened it.
func (a *Adapter) Close(ctx context.Context) error {
	return a.life.Close(ctx, func(c *conn) error {
		var errs []error
		if c.nc.IsConnected() && ctx.Err() == nil {
			fctx, cancel := flushCtx(ctx)
			if err := c.nc.FlushWithContext(fctx); err != nil {
				errs = append(errs, fmt.Errorf("channels/jetstream: flush: %w", err))
			}
			cancel()
		}
		if a.external != nil {
			// The caller's connection stays open: remove what this adapter
			// added to it (the reply subscription of asynchronous publishes).
			c.js.CleanupPublisher()
		} else {
			// Closing writes what is buffered: on a frozen link it may block
			// until the write deadline; it is left to finish past ctx.
			cctx, cancel := flushCtx(ctx)
			if err := kit.Bounded(cctx, "close of the NATS connection", func() error { c.nc.Close(); return nil }); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
		a.kv = nil
		a.streams.Clear()
		return errors.Join(errs...)
	})
}

// flushCtx bounds a flush by ctx, or by DefaultOpTimeout when ctx has no
// deadline. A ctx that has ended gives no more time.
func flushCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || ctx.Err() != nil {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultOpTimeout)
}

var _ broker.Limiter = (*Adapter)(nil)

// MaxHeaderBytes bounds the headers of a message stored by JetStream: the
// server refuses a header block over 64 KiB (65,535 bytes); the rest is
// left for the protocol line and the adapter's own Nats-* headers.
const MaxHeaderBytes = 65535 - 512

// Limits reports the server's max_payload (the connection's MaxPayload) as
// the bound of one message, payload and headers together, and
// MaxHeaderBytes; zero before Connect.
func (a *Adapter) Limits() broker.Limits {
	c := a.life.Load()
	if c == nil {
		return broker.Limits{}
	}
	return broker.Limits{MaxHeaderBytes: MaxHeaderBytes, MaxMessageBytes: int(c.nc.MaxPayload())}
}

var _ broker.LagReporter = (*Adapter)(nil)

// Lag reports the group's consumer: messages not yet delivered
// (NumPending) and delivered but not acknowledged (NumAckPending, which
// includes the messages waiting for a retry).
func (a *Adapter) Lag(ctx context.Context, channel, group string) (broker.GroupLag, error) {
	c, err := a.life.Current()
	if err != nil {
		return broker.GroupLag{}, err
	}
	stream := StreamName(channel)
	if s, ok := a.streamOf.Load(channel); ok {
		stream = s.(string)
	}
	cons, err := c.js.Consumer(ctx, stream, DurableName(group))
	if err != nil {
		return broker.GroupLag{Lag: -1}, err
	}
	info := cons.CachedInfo()
	return broker.GroupLag{Lag: int64(info.NumPending), Pending: int64(info.NumAckPending)}, nil
}

var _ broker.ChannelRemover = (*Adapter)(nil)

// RemoveChannel deletes the channel's stream (StreamName), with its
// consumers and their failure records. This adapter's own subscriptions
// of the channel are drained first (bounded by ctx): they would create
// the stream again. Subscriptions of other processes recreate it as they
// do after any deletion. A channel kept in a shared stream (StreamOptions
// subjects) is not removed this way: RemoveChannel returns an error
// wrapping broker.ErrUnsupported; delete or purge that stream yourself.
func (a *Adapter) RemoveChannel(ctx context.Context, channel string) error {
	c := a.life.Load()
	if c == nil {
		return broker.ErrNotConnected
	}
	var errs []error
	for _, sub := range a.life.Subs.List() {
		if s, ok := sub.(*subscription); ok && s.ch.Name == channel {
			if err := s.Drain(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	stream := StreamName(channel)
	if s, ok := a.streamOf.Load(channel); ok {
		stream = s.(string)
	}
	// Only a stream that holds this channel alone is deleted: one that
	// holds other subjects too (StreamOptions.Subjects) keeps their
	// messages, consumers and records.
	if st, err := c.js.Stream(ctx, stream); err == nil {
		if subj := st.CachedInfo().Config.Subjects; len(subj) != 1 || subj[0] != channel {
			return errors.Join(append(errs, fmt.Errorf("%w: channels/jetstream: remove %q: stream %q holds the subjects %v: "+
				"a shared stream is not removed with one of its channels (delete or purge it yourself)",
				broker.ErrUnsupported, channel, stream, subj))...)
		}
	} else if !errors.Is(err, js.ErrStreamNotFound) {
		return errors.Join(append(errs, fmt.Errorf("channels/jetstream: remove %q: %w", channel, err))...)
	}
	a.streams.Delete(channel)
	a.streamOf.Delete(channel)
	if err := c.js.DeleteStream(ctx, stream); err != nil && !errors.Is(err, js.ErrStreamNotFound) {
		return errors.Join(append(errs, fmt.Errorf("channels/jetstream: remove %q: %w", channel, err))...)
	}
	if err := purgeStream(ctx, c.js, a.bucket, stream); err != nil {
		errs = append(errs, fmt.Errorf("channels/jetstream: remove %q: failure records: %w", channel, err))
	}
	return errors.Join(errs...)
}

// prepare validates ch and resolves its options, without the server.
func (a *Adapter) prepare(ch *broker.Channel) (ChannelOptions, error) {
	opts, err := kit.PrepareChannel(ch, "jetstream", a.chopts, kit.Overlay[ChannelOptions], ChannelOptions.withDefaults)
	if err != nil {
		return opts, err
	}
	if err := opts.checkMaxDeliver(ch); err != nil {
		return opts, err
	}
	if ch.Start.IsSet() {
		p, t := deliverPolicyOf(ch.Start)
		co, ok := kit.Option[ChannelOptions](ch)
		switch {
		case ok && co.DeliverPolicy != deliverUnset && (co.DeliverPolicy != p || p == DeliverByStartTime && !co.StartTime.Equal(t)):
			return opts, &broker.ConflictError{Adapter: a.Name(), Channel: ch.Name, Portable: "Start " + ch.Start.String(),
				Specific: fmt.Sprintf("jetstream.ChannelOptions.DeliverPolicy %d", co.DeliverPolicy)}
		case ok && co.DeliverPolicy != deliverUnset:
			// The channel's own equal policy stands, checked as given.
		default:
			// The portable position replaces the adapter-wide policy, and
			// like every start position leaves an existing group where it is.
			opts.DeliverPolicy, opts.StartSequence, opts.StartTime = deliverUnset, 0, time.Time{}
			opts.portable, opts.portableTime = p, t
		}
	}
	return opts, nil
}

// deliverPolicyOf maps a portable start position: DeliverNew for the
// newest, DeliverAll for the oldest, DeliverByStartTime for a time.
func deliverPolicyOf(p broker.StartPosition) (DeliverPolicy, time.Time) {
	switch p.From {
	case broker.FromOldest:
		return DeliverAll, time.Time{}
	case broker.FromTime:
		return DeliverByStartTime, p.Time
	}
	return DeliverNew, time.Time{}
}

// CheckChannel validates a channel declaration without a connection
// (broker.ChannelChecker): what Subscribe checks before it creates the
// stream and the consumer.
func (a *Adapter) CheckChannel(ch *broker.Channel) error {
	c := *ch
	_, err := a.prepare(&c)
	return err
}
