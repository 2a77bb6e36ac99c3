package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/microchannels/channels/kit"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

func init() {
	broker.Register("Redis", []string{"redis", "rediss"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			return New(DefaultURL)
		}
		return New(u.String())
	})
}

// Stream field names shared with @moleculer/channels.
const (
	FieldPayload = "payload"
	FieldHeaders = "headers"
)

type publisher struct {
	cmd    goredis.Cmdable // the client, or its autopipeliner
	client goredis.UniversalClient
	ser    broker.Serializer
}

// Adapter implements broker.Adapter on Redis Streams (single node or Cluster).
type Adapter struct {
	uopts    *goredis.UniversalOptions // nil when the client is the caller's
	external goredis.UniversalClient
	consumer ChannelOptions
	display  string      // scheme and hosts, never the userinfo
	urlTLS   *tls.Config // the TLS configuration derived from the URL

	autoPipeline bool
	maxLen       int64 // default XADD MAXLEN (0: none)
	approxMaxLen bool
	wait         replication // WithWaitReplicas
	// pub is read without a lock on every send.
	pub atomic.Pointer[publisher]

	state  kit.ConnState
	mu     sync.Mutex
	client goredis.UniversalClient
	env    broker.Env
	subs   kit.Subscriptions
}

var _ broker.Adapter = (*Adapter)(nil)

// New builds an adapter from a redis:// or rediss:// URL. It does not connect.
func New(rawURL string, opts ...Option) (*Adapter, error) {
	uo, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	scheme, _, _ := strings.Cut(rawURL, "://")
	a, err := newAdapter(uo, nil, "", opts)
	if err != nil {
		return nil, err
	}
	a.display = displayURL(strings.ToLower(scheme), a.uopts.Addrs) // after WithClusterAddrs
	return a, nil
}

// NewFromOptions builds an adapter from go-redis universal options (one
// address: a single node; several, or IsClusterMode: a cluster).
func NewFromOptions(o *goredis.UniversalOptions, opts ...Option) (*Adapter, error) {
	if o == nil || len(o.Addrs) == 0 {
		return nil, fmt.Errorf("%w: redis options need at least one address", broker.ErrInvalidOption)
	}
	cp := *o
	return newAdapter(&cp, nil, fmt.Sprint(o.Addrs), opts)
}

// NewFromClient uses an existing client. The caller keeps its lifetime:
// Close does not close it. Blocking reads share its pool.
func NewFromClient(c goredis.UniversalClient, opts ...Option) (*Adapter, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: redis client is nil", broker.ErrInvalidOption)
	}
	return newAdapter(nil, c, "client", opts)
}

func newAdapter(uo *goredis.UniversalOptions, c goredis.UniversalClient, display string, opts []Option) (*Adapter, error) {
	a := &Adapter{uopts: uo, external: c, display: display}
	if uo != nil {
		a.urlTLS = uo.TLSConfig
	}
	if err := kit.ApplyOptions(a, opts); err != nil {
		return nil, err
	}
	if uo != nil {
		uo.ContextTimeoutEnabled = true
		if uo.Protocol == 0 {
			uo.Protocol = DefaultProtocol
		}
	}
	return a, nil
}

// Name returns "Redis".
func (a *Adapter) Name() string { return "Redis" }

// String describes the target without credentials.
func (a *Adapter) String() string { return "redis " + a.display }

// Client returns the connected client (nil before Connect).
func (a *Adapter) Client() goredis.UniversalClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.client
}

// Connect opens the client and checks the server answers.
func (a *Adapter) Connect(ctx context.Context, env broker.Env) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Connected() {
		return nil
	}
	a.env = env.Normalize()
	routeDriverLog(a.env.Logger)
	c := a.external
	if c == nil {
		c = goredis.NewUniversalClient(a.uopts)
		watchFailover(c)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		if a.external == nil {
			_ = c.Close()
		}
		return fmt.Errorf("channels/redis: connect %s: %w", a.display, broker.Redacted(err))
	}
	if err := checkWait(c, a.waitFor(SendOptions{}, false)); err != nil {
		if a.external == nil {
			_ = c.Close()
		}
		return err
	}
	var pub goredis.Cmdable = c
	if a.autoPipeline {
		ap, err := autoPipeliner(c)
		if err != nil {
			if a.external == nil {
				_ = c.Close()
			}
			return fmt.Errorf("channels/redis: autopipeline: %w", err)
		}
		pub = ap
	}
	a.client = c
	a.pub.Store(&publisher{cmd: pub, client: c, ser: a.env.Serializer})
	a.state.SetConnected()
	return nil
}

// Publish appends the message to the stream with XADD and returns once
// Redis accepted it.
func (a *Adapter) Publish(ctx context.Context, channel string, msg *broker.Outgoing) error {
	pub := a.pub.Load()
	if pub == nil {
		if err := a.state.Check(); err != nil {
			return err
		}
		return broker.ErrClosed // closing
	}
	args, w, err := a.xaddArgs(pub.ser, channel, msg)
	if err != nil {
		return err
	}
	if w.n > 0 {
		if err := checkWait(pub.client, w); err != nil {
			return err
		}
		return publishError(channel, xaddWaited(ctx, pub.client, channel, []*goredis.XAddArgs{args}, w)[0])
	}
	if err := pub.cmd.XAdd(ctx, args).Err(); err != nil {
		return &broker.PublishError{Channel: channel, Err: err}
	}
	return nil
}

// publishError wraps the error of an XADD in a *broker.PublishError
// (a *ReplicationError comes wrapped already).
func publishError(channel string, err error) error {
	var pe *broker.PublishError
	if err == nil || errors.As(err, &pe) {
		return err
	}
	return &broker.PublishError{Channel: channel, Err: err}
}

// xaddArgs builds the XADD of one message and tells how many replicas the
// send waits for.
func (a *Adapter) xaddArgs(ser broker.Serializer, channel string, msg *broker.Outgoing) (*goredis.XAddArgs, replication, error) {
	values, err := encodeFields(ser, msg.Payload, msg.Headers)
	if err != nil {
		return nil, replication{}, &broker.EncodeError{Channel: channel, Err: err}
	}
	if err := kit.CheckOptions("redis", msg.Options.AdapterOptions, isSendOption); err != nil {
		return nil, replication{}, err
	}
	args := &goredis.XAddArgs{Stream: channel, Values: values}
	so, ok := kit.SendOption[SendOptions](msg.Options)
	if ok && so.MaxLen > 0 {
		args.MaxLen, args.Approx = so.MaxLen, so.ApproxMaxLen
	} else if a.maxLen > 0 {
		args.MaxLen, args.Approx = a.maxLen, a.approxMaxLen
	}
	return args, a.waitFor(so, ok), nil
}

// BatchPipeline is the number of XADDs PublishBatch sends in one pipeline
// (one round trip); a larger batch takes several, one after the other.
const BatchPipeline = 512

var _ broker.BatchPublisher = (*Adapter)(nil)

// PublishBatch appends the messages to the stream with pipelined XADDs,
// BatchPipeline per round trip, in order, and reports each XADD's reply.
// The pipeline is not a transaction: a failure can leave part of the batch
// appended, and the errors say which part. On a Cluster the whole batch
// goes to the node of the stream's slot (a batch names one stream). With
// WithAutoPipeline the batch still goes as its own pipeline. As with a
// single send, a network error that go-redis retries sends the round again,
// so a message of that round may be appended twice (a duplicate delivery).
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	pub := a.pub.Load()
	if pub == nil {
		if err := a.state.Check(); err != nil {
			return kit.FailBatch(len(msgs), err)
		}
		return kit.FailBatch(len(msgs), broker.ErrClosed) // closing
	}
	errs := make([]error, len(msgs))
	type sent struct {
		i   int
		cmd *goredis.StringCmd
	}
	round := make([]sent, 0, min(len(msgs), BatchPipeline))
	for start := 0; start < len(msgs); start += BatchPipeline {
		end := min(start+BatchPipeline, len(msgs))
		if err := ctx.Err(); err != nil {
			for i := start; i < end; i++ {
				errs[i] = &broker.PublishError{Channel: channel, Err: err}
			}
			continue
		}
		pipe := pub.client.Pipeline()
		round = round[:0]
		var waited []*goredis.XAddArgs
		var w replication
		for i := start; i < end; i++ {
			args, mw, err := a.xaddArgs(pub.ser, channel, msgs[i])
			if err != nil {
				errs[i] = err
				continue
			}
			w.n, w.timeout = max(w.n, mw.n), max(w.timeout, mw.timeout)
			waited = append(waited, args)
			round = append(round, sent{i, pipe.XAdd(ctx, args)})
		}
		if len(round) == 0 {
			continue
		}
		if w.n > 0 {
			// The round goes with WAIT, on the master of the slot.
			var werrs []error
			if err := checkWait(pub.client, w); err != nil {
				werrs = kit.FailBatch(len(waited), err)
			} else {
				werrs = xaddWaited(ctx, pub.client, channel, waited, w)
			}
			for k, s := range round {
				errs[s.i] = publishError(channel, werrs[k])
			}
			continue
		}
		_, _ = pipe.Exec(ctx) // each command carries its own reply or error
		for _, s := range round {
			if err := s.cmd.Err(); err != nil {
				errs[s.i] = &broker.PublishError{Channel: channel, Err: err}
			}
		}
	}
	return broker.BatchErrors(errs)
}

// encodeFields builds XADD values: payload first, then headers when there
// are any (the order @moleculer/channels 0.1 reads them in).
func encodeFields(ser broker.Serializer, payload []byte, headers map[string]string) ([]any, error) {
	if len(headers) == 0 {
		return []any{FieldPayload, payload}, nil
	}
	hb, err := broker.EncodeHeaders(ser, headers)
	if err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	return []any{FieldPayload, payload, FieldHeaders, hb}, nil
}

// Subscribe creates the consumer group (XGROUP CREATE ... MKSTREAM, an
// existing group is kept) and returns a subscription that is not started.
func (a *Adapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	opts, err := a.prepare(ch)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	c := a.client
	ser := a.env.Serializer
	a.mu.Unlock()
	if err := c.XGroupCreateMkStream(ctx, ch.Name, ch.Group, opts.StartID).Err(); err != nil && !isBusyGroup(err) {
		return nil, fmt.Errorf("channels/redis: create group %q on %q: %w", ch.Group, ch.Name, err)
	}
	s := newSubscription(a, c, ser, ch, opts)
	a.subs.Add(s)
	return s, nil
}

// prepare validates ch and resolves its options, without the server. A
// portable start position (ch.Start) sets StartID, over the adapter-wide
// StartID; a channel's own different StartID conflicts with it.
func (a *Adapter) prepare(ch *broker.Channel) (ChannelOptions, error) {
	opts, err := kit.PrepareChannel(ch, "redis", a.consumer, kit.Overlay[ChannelOptions], ChannelOptions.withDefaults)
	if err != nil || !ch.Start.IsSet() {
		return opts, err
	}
	id := StartIDOf(ch.Start)
	if co, ok := kit.Option[ChannelOptions](ch); ok && co.StartID != "" && co.StartID != id {
		return opts, &broker.ConflictError{Adapter: a.Name(), Channel: ch.Name, Portable: "Start " + ch.Start.String(),
			Specific: fmt.Sprintf("redis.ChannelOptions.StartID %q", co.StartID)}
	}
	opts.StartID = id
	return opts, nil
}

// StartIDOf is the XGROUP CREATE id of a portable start position: "$" for
// the newest (and the default), "0" for the oldest, and for a time the
// last id before it ("<ms-1>-18446744073709551615"), so that the group is
// delivered the entries added at or after that millisecond.
func StartIDOf(p broker.StartPosition) string {
	switch p.From {
	case broker.FromOldest:
		return "0"
	case broker.FromTime:
		ms := p.Time.UnixMilli()
		if ms <= 0 {
			return "0"
		}
		return fmt.Sprintf("%d-%d", ms-1, uint64(math.MaxUint64))
	}
	return DefaultStartID
}

// CheckChannel validates a channel declaration without a connection
// (broker.ChannelChecker): what Subscribe checks before it creates the group.
func (a *Adapter) CheckChannel(ch *broker.Channel) error {
	c := *ch
	_, err := a.prepare(&c)
	return err
}

func isBusyGroup(err error) bool {
	return err != nil && len(err.Error()) >= 9 && err.Error()[:9] == "BUSYGROUP"
}

// Close drains the subscriptions still running (bounded by ctx) and closes
// the client it opened.
func (a *Adapter) Close(ctx context.Context) error {
	a.mu.Lock()
	if !a.state.Connected() {
		a.state.SetClosed()
		a.mu.Unlock()
		return nil
	}
	a.pub.Store(nil) // no send after this point
	a.mu.Unlock()
	errs := []error{a.subs.DrainAll(ctx)}
	a.mu.Lock()
	a.state.SetClosed()
	if a.external == nil && a.client != nil {
		errs = append(errs, a.client.Close())
	}
	a.client = nil
	a.pub.Store(nil)
	a.mu.Unlock()
	return errors.Join(errs...)
}

func autoPipeliner(c goredis.UniversalClient) (goredis.Cmdable, error) {
	switch x := c.(type) {
	case *goredis.Client:
		return x.AutoPipeline()
	case *goredis.ClusterClient:
		return x.AutoPipeline()
	}
	return nil, fmt.Errorf("%w: autopipelining needs a *redis.Client or *redis.ClusterClient, got %T", broker.ErrUnsupported, c)
}

var _ broker.LagReporter = (*Adapter)(nil)

// Lag reports the group's lag and pending count (XINFO GROUPS; the lag
// needs Redis 7, else -1).
func (a *Adapter) Lag(ctx context.Context, channel, group string) (broker.GroupLag, error) {
	c := a.Client()
	if c == nil {
		return broker.GroupLag{}, broker.ErrNotConnected
	}
	gs, err := c.XInfoGroups(ctx, channel).Result()
	if err != nil {
		return broker.GroupLag{}, err
	}
	for _, g := range gs {
		if g.Name == group {
			return broker.GroupLag{Lag: g.Lag, Pending: g.Pending}, nil
		}
	}
	return broker.GroupLag{}, fmt.Errorf("channels/redis: group %q not found on %q", group, channel)
}

var _ broker.ChannelRemover = (*Adapter)(nil)

// RemoveChannel deletes the stream (with its groups) and the failure
// records of its messages (keys chan:<stream>:*).
func (a *Adapter) RemoveChannel(ctx context.Context, channel string) error {
	c := a.Client()
	if c == nil {
		return broker.ErrNotConnected
	}
	if err := c.Del(ctx, channel).Err(); err != nil {
		return fmt.Errorf("channels/redis: remove %q: %w", channel, err)
	}
	pattern := "chan:" + channel + ":*"
	del := func(ctx context.Context, n goredis.Cmdable) error {
		iter := n.Scan(ctx, 0, pattern, 500).Iterator()
		for iter.Next(ctx) {
			if err := n.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	if cc, ok := c.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error { return del(ctx, n) })
	} else {
		err = del(ctx, c)
	}
	if err != nil {
		return fmt.Errorf("channels/redis: remove the records of %q: %w", channel, err)
	}
	return nil
}
