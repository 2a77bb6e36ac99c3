package redis

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/microchannels/channels/kit"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// Defaults of the Redis adapter.
const (
	// DefaultURL is used when the adapter is named by its type name alone.
	DefaultURL = "redis://127.0.0.1:6379"
	// DefaultReadTimeout is the XREADGROUP BLOCK time. It is never 0
	// (forever): a drain must be able to break the read.
	DefaultReadTimeout = 2 * time.Second
	// DefaultMinIdleTime is how long a message must sit unacknowledged and
	// untouched before another consumer of the group may claim it. A live
	// handler refreshes the idle time of its messages, so only the messages
	// of a crashed consumer reach it.
	DefaultMinIdleTime = 30 * time.Second
	// DefaultClaimInterval is the period of the maintenance loop that claims
	// the messages of dead consumers and dead-letters those over their limit.
	DefaultClaimInterval = 250 * time.Millisecond
	// DefaultStartID is where a new group starts: "$" (new messages only).
	// "0" makes a new group read the whole stream.
	DefaultStartID = "$"
	// DefaultStaleConsumerAge is how long a consumer that holds nothing may
	// stay silent before a live member removes it from the group (consumers
	// of processes that crashed, or ran with another node id).
	DefaultStaleConsumerAge = time.Hour
	// DefaultErrorInfoTTL is how long the failure record of a message is
	// kept (hash chan:<stream>:<group>:msg:<id>: failed runs, last error,
	// a failed dead-letter publish).
	DefaultErrorInfoTTL = 24 * time.Hour
	// DefaultAckBatch bounds the ids acknowledged by one XACK.
	DefaultAckBatch = 256
	// DefaultPendingPage is the page size of the pending-entries scan.
	DefaultPendingPage = 100
	// DefaultOpTimeout bounds the adapter's own commands that no caller's
	// context bounds (hand-backs, consumer clean-up, acks).
	DefaultOpTimeout = 5 * time.Second
	// DefaultProtocol is the RESP version of the clients the adapter builds
	// (New, NewFromOptions) when the URL (protocol=) or the options do not
	// set one. The adapter uses no RESP3 feature, and go-redis checks every
	// RESP3 connection for pending push notifications before each command,
	// which costs a socket read per command.
	DefaultProtocol = 2
)

const (
	// heartbeatBatch bounds the ids refreshed by one heartbeat script call.
	heartbeatBatch = 500
	// staleSweepsPerAge: stale consumers are looked for this many times per
	// StaleConsumerAge.
	staleSweepsPerAge = 4
)

// ChannelOptions are the consumer timings. Set them adapter-wide with
// WithChannelOptions, or per channel by putting a ChannelOptions value in
// the channel's AdapterOptions; zero fields take the adapter value, then
// the defaults.
type ChannelOptions struct {
	// ReadTimeout is the XREADGROUP BLOCK time (default 2s).
	ReadTimeout time.Duration
	// MinIdleTime is the idle time after which a message held by another
	// (crashed) consumer is claimed (default 30s).
	MinIdleTime time.Duration
	// ClaimInterval is the maintenance loop period (default 250ms); it is also
	// the resolution of retry delays.
	ClaimInterval time.Duration
	// HeartbeatInterval is how often held messages get their idle time reset
	// (default MinIdleTime/3).
	HeartbeatInterval time.Duration
	// StaleConsumerAge is how long a consumer of the group that holds no
	// message may stay idle before it is deleted (default 1h). A live
	// consumer deleted this way is recreated by its next read.
	StaleConsumerAge time.Duration
	// StartID is where a new group starts reading ("$" by default, "0" for
	// the whole stream). It only applies when the group is created.
	StartID string
	// ErrorInfoTTL is how long the failure record of a message (failed
	// runs, last error, a dead-letter publish that failed) is kept
	// (default 24h); it is deleted with the ack.
	ErrorInfoTTL time.Duration
	// AckBatch bounds the ids acknowledged by one XACK (default 256).
	AckBatch int
}

// SendOptions are the Redis-only options of one send, passed with
// broker.WithAdapterOptions or [WithMaxLen].
type SendOptions struct {
	// MaxLen caps the stream (XADD MAXLEN); 0 means the adapter default
	// ([WithDefaultMaxLen]), itself none by default.
	MaxLen int64
	// ApproxMaxLen makes the cap approximate (MAXLEN ~), which is cheaper.
	ApproxMaxLen bool
	// WaitReplicas makes the send return only once this many replicas
	// acknowledged the write (WAIT, see [WithWaitReplicas]); 0 means the
	// adapter's setting, -1 no wait for this send.
	WaitReplicas int
	// WaitTimeout bounds the wait for replicas (default the adapter's, else
	// DefaultWaitTimeout).
	WaitTimeout time.Duration
}

// Validate checks the options.
func (o SendOptions) Validate() error {
	switch {
	case o.MaxLen < 0:
		return fmt.Errorf("%w: redis MaxLen must be >= 0", broker.ErrInvalidOption)
	case o.WaitReplicas < -1:
		return fmt.Errorf("%w: redis WaitReplicas must be >= 0, or -1 for no wait", broker.ErrInvalidOption)
	case o.WaitTimeout < 0:
		return fmt.Errorf("%w: redis WaitTimeout must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}

// WithMaxLen is the send option that caps the stream at n entries
// (approximately when approx is true). Trimming can remove entries that a
// group has not read yet; use it only when losing the oldest entries is
// acceptable.
func WithMaxLen(n int64, approx bool) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{MaxLen: n, ApproxMaxLen: approx})
}

// WithReplicas is the send option that returns only once n replicas
// acknowledged the message, waiting at most timeout (0: the adapter's, else
// DefaultWaitTimeout); see [WithWaitReplicas] for what it guarantees. n = -1
// sends without waiting whatever the adapter's setting.
func WithReplicas(n int, timeout time.Duration) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{WaitReplicas: n, WaitTimeout: timeout})
}

// isSendOption: send options of this package are SendOptions values.
var isSendOption = kit.IsOf[SendOptions]

func (o ChannelOptions) withDefaults() ChannelOptions {
	defaults := ChannelOptions{ReadTimeout: DefaultReadTimeout, MinIdleTime: DefaultMinIdleTime,
		ClaimInterval: DefaultClaimInterval, StartID: DefaultStartID, StaleConsumerAge: DefaultStaleConsumerAge,
		ErrorInfoTTL: DefaultErrorInfoTTL, AckBatch: DefaultAckBatch}
	o = kit.Overlay(defaults, o)
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = max(o.MinIdleTime/3, time.Millisecond)
	}
	return o
}

// Validate checks the timings.
func (o ChannelOptions) Validate() error {
	switch {
	case o.ReadTimeout < 0:
		return fmt.Errorf("%w: redis ReadTimeout must be > 0", broker.ErrInvalidOption)
	case o.MinIdleTime < 0:
		return fmt.Errorf("%w: redis MinIdleTime must be > 0", broker.ErrInvalidOption)
	case o.ClaimInterval < 0:
		return fmt.Errorf("%w: redis ClaimInterval must be > 0", broker.ErrInvalidOption)
	case o.StaleConsumerAge < 0:
		return fmt.Errorf("%w: redis StaleConsumerAge must be > 0", broker.ErrInvalidOption)
	case o.ErrorInfoTTL < 0:
		return fmt.Errorf("%w: redis ErrorInfoTTL must be > 0", broker.ErrInvalidOption)
	case o.AckBatch < 0:
		return fmt.Errorf("%w: redis AckBatch must be > 0", broker.ErrInvalidOption)
	case o.HeartbeatInterval < 0:
		return fmt.Errorf("%w: redis HeartbeatInterval must be > 0", broker.ErrInvalidOption)
	case o.MinIdleTime > 0 && o.HeartbeatInterval >= o.MinIdleTime:
		return fmt.Errorf("%w: redis HeartbeatInterval (%s) must be shorter than MinIdleTime (%s)",
			broker.ErrInvalidOption, o.HeartbeatInterval, o.MinIdleTime)
	}
	return nil
}

// Option configures an Adapter.
type Option func(*Adapter) error

// WithChannelOptions sets the adapter-wide consumer timings; a channel's
// own ChannelOptions (in its AdapterOptions) lie over them.
func WithChannelOptions(o ChannelOptions) Option {
	return func(a *Adapter) error {
		if err := o.Validate(); err != nil {
			return err
		}
		a.consumer = kit.Overlay(a.consumer, o)
		return nil
	}
}

// WithConsumerOptions is WithChannelOptions.
//
// Deprecated: use [WithChannelOptions], the name every adapter uses.
func WithConsumerOptions(o ChannelOptions) Option { return WithChannelOptions(o) }

// WithAutoPipeline publishes through go-redis autopipelining: concurrent
// sends share round trips, which multiplies the throughput of many
// concurrent senders. Trade-offs (go-redis marks the API experimental): the
// send's ctx deadline bounds only the queueing, the client's read and write
// timeouts bound the rest; and a network error retried by go-redis can
// append a message twice, which consumers see as a duplicate delivery.
func WithAutoPipeline() Option {
	return func(a *Adapter) error { a.autoPipeline = true; return nil }
}

// WithDefaultMaxLen caps every stream this adapter publishes to at n
// entries (XADD MAXLEN, approximate "~" when approx is true), for the sends
// that do not set broker.WithMaxLen themselves (the xaddMaxLen of
// @moleculer/channels, adapter-wide). 0, the default, means no cap.
// Dead-letter copies are never capped. Trimming can remove entries a group
// has not read yet: use it only where losing the oldest entries is
// acceptable.
func WithDefaultMaxLen(n int64, approx bool) Option {
	return func(a *Adapter) error {
		if n < 0 {
			return fmt.Errorf("%w: redis default MaxLen must be >= 0", broker.ErrInvalidOption)
		}
		a.maxLen, a.approxMaxLen = n, approx
		return nil
	}
}

// WithClusterAddrs switches to Redis Cluster with these seed nodes (the
// URL's credentials and TLS settings still apply; with rediss://, each node's
// certificate is verified against the host dialed, not the URL's host,
// unless WithTLS sets a ServerName).
func WithClusterAddrs(addrs ...string) Option {
	return func(a *Adapter) error {
		if len(addrs) == 0 {
			return fmt.Errorf("%w: redis cluster needs at least one address", broker.ErrInvalidOption)
		}
		if a.uopts == nil {
			return fmt.Errorf("%w: WithClusterAddrs needs adapter-owned connection options", broker.ErrInvalidOption)
		}
		a.uopts.Addrs = addrs
		a.uopts.IsClusterMode = true
		a.uopts.DB = 0
		if a.uopts.TLSConfig == a.urlTLS {
			a.uopts.TLSConfig = clusterTLS(a.urlTLS)
		}
		return nil
	}
}

// WithTLS sets the TLS configuration (rediss:// URLs get one by default).
func WithTLS(cfg *tls.Config) Option {
	return func(a *Adapter) error {
		if a.uopts == nil {
			return fmt.Errorf("%w: WithTLS needs adapter-owned connection options", broker.ErrInvalidOption)
		}
		a.uopts.TLSConfig = cfg
		return nil
	}
}

// parseURL turns a redis:// or rediss:// URL into universal options.
// Cluster: redis://host1:7001?addr=host2:7002&addr=host3:7003 (go-redis
// cluster URL syntax); user, password and TLS work in both forms.
func parseURL(raw string) (*goredis.UniversalOptions, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, broker.InvalidURLError(broker.ErrInvalidOption, "redis", raw, err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("%w: redis URL scheme must be redis:// or rediss://, got %q", broker.ErrInvalidOption, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: redis URL has no host", broker.ErrInvalidOption)
	}
	// A password with "#", "/" or "?" unescaped cuts the URL short:
	// "redis://u:123#abc@host" parses as host "u", port 123, no password.
	// It would connect to the wrong host without its password, and show
	// the password as a host: refused, without showing it.
	if shown := broker.DisplayURL(raw); !strings.EqualFold(shown, u.Scheme+"://"+u.Host) {
		return nil, fmt.Errorf("%w: redis URL %s: the userinfo holds a character that must be percent-encoded (#, /, ? or @)",
			broker.ErrInvalidOption, shown)
	}
	if u.Query().Has("addr") {
		co, err := goredis.ParseClusterURL(raw)
		if err != nil {
			return nil, broker.InvalidURLError(broker.ErrInvalidOption, "redis cluster", raw, err)
		}
		return &goredis.UniversalOptions{Addrs: co.Addrs, Username: co.Username, Password: co.Password,
			TLSConfig: clusterTLS(co.TLSConfig), IsClusterMode: true, ClientName: co.ClientName, Protocol: co.Protocol,
			DialTimeout: co.DialTimeout, ReadTimeout: co.ReadTimeout, WriteTimeout: co.WriteTimeout,
			PoolSize: co.PoolSize, MinIdleConns: co.MinIdleConns, MaxRetries: co.MaxRetries}, nil
	}
	o, err := goredis.ParseURL(raw)
	if err != nil {
		return nil, broker.InvalidURLError(broker.ErrInvalidOption, "redis", raw, err)
	}
	return &goredis.UniversalOptions{Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password,
		DB: o.DB, TLSConfig: o.TLSConfig, Protocol: o.Protocol, ClientName: o.ClientName,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: o.PoolSize, MinIdleConns: o.MinIdleConns, MaxRetries: o.MaxRetries}, nil
}

// clusterTLS is the TLS configuration of a cluster's connections made from
// the one go-redis derives from a rediss:// URL, whose ServerName is the
// URL's first host: every node would be verified against that name (a node
// presenting the first host's certificate would pass for any other). The
// copy has no ServerName, so each connection verifies the host it dials.
func clusterTLS(c *tls.Config) *tls.Config {
	if c == nil || c.ServerName == "" {
		return c
	}
	c = c.Clone()
	c.ServerName = ""
	return c
}

// displayURL is what String and errors show of the URL: scheme and hosts.
func displayURL(scheme string, addrs []string) string {
	return scheme + "://" + strings.Join(addrs, ",")
}
