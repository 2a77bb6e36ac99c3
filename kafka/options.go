package kafka

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/kit"
)

// Defaults. The timings favour latency: a lone message is written at once
// (no batch timer: the sends that arrive while a partition's request is in
// flight share the next one) and read as soon as the broker has it (a
// fetch returns with the first byte; MaxWait only bounds an empty long
// poll).
const (
	DefaultURL = "kafka://127.0.0.1:9092"
	// DefaultPartitions is the partition count of the topics the adapter
	// creates: members of a group share a channel by partitions, so it is
	// the most members that can consume a channel at once.
	DefaultPartitions = 6
	// DefaultReplicationFactor (-1) lets the broker apply its
	// default.replication.factor.
	DefaultReplicationFactor = -1
	// DefaultBatchSize bounds the messages of one partition in one
	// produce request.
	DefaultBatchSize = 1000
	// DefaultMaxWait bounds an empty fetch (long poll) of a partition.
	DefaultMaxWait = 500 * time.Millisecond
	// DefaultCommitInterval is how often processed offsets are committed
	// (one request for every partition that moved).
	DefaultCommitInterval = 100 * time.Millisecond
	// DefaultSessionTimeout is how long a silent member keeps its
	// partitions: the takeover time after a crash.
	DefaultSessionTimeout = 10 * time.Second
	// DefaultHeartbeatInterval is how often a member tells the group it is
	// alive; a rebalance is noticed within it.
	DefaultHeartbeatInterval = time.Second
	// DefaultRebalanceTimeout bounds how long a rebalance waits for members
	// to rejoin; a member first finishes (or gives up) its running messages.
	DefaultRebalanceTimeout = 30 * time.Second
	// DefaultOpTimeout bounds one administrative request.
	DefaultOpTimeout = 10 * time.Second
	// DefaultReadAheadBytes bounds the bytes of the messages a
	// subscription holds without a slot (ChannelOptions.ReadAheadBytes).
	DefaultReadAheadBytes = 32 << 20
	// DefaultKeepDelay is how long a message whose dead-letter publish
	// failed waits before it is dead-lettered again.
	DefaultKeepDelay = 5 * time.Second
)

// Ordering says which messages of a partition may run at the same time.
type Ordering int

const (
	orderingUnset Ordering = iota
	// Unordered runs up to MaxInFlight messages of a partition at once,
	// keyed or not: the messages of one key may run out of order.
	Unordered
	// PerKey (the default) runs the messages of one key one at a time, in
	// partition order, and different keys concurrently; messages without a
	// key run like Unordered ones.
	PerKey
	// PerPartition runs the messages of a partition one at a time, in order.
	PerPartition
)

func (o Ordering) String() string {
	switch o {
	case Unordered:
		return "unordered"
	case PerKey:
		return "per-key"
	case PerPartition:
		return "per-partition"
	}
	return fmt.Sprintf("Ordering(%d)", int(o))
}

// TopicOptions shape the topics the adapter creates (the channel's and its
// dead-letter topic). An existing topic is used as it is.
type TopicOptions struct {
	// Partitions of a created topic (default DefaultPartitions).
	Partitions int
	// ReplicationFactor of a created topic (default -1: the broker's).
	ReplicationFactor int
	// Configs are topic configs (retention.ms, cleanup.policy, ...).
	Configs map[string]string
}

// ChannelOptions are the consumer and topic settings of a channel. Set
// them adapter-wide with WithChannelOptions, or per channel by putting a
// ChannelOptions value in the channel's AdapterOptions; zero fields take
// the adapter value, then the defaults.
type ChannelOptions struct {
	// FromBeginning makes a new group start at the oldest message of the
	// topic instead of the end (the group is created, and its start
	// offsets committed, when Subscribe returns). An existing group
	// resumes at its committed offsets either way.
	FromBeginning bool
	// start is the channel's portable start position (broker.Channel.Start),
	// which replaces FromBeginning.
	start broker.StartPosition
	// Ordering chooses what may run concurrently within a partition
	// (default PerKey: the messages of a key one at a time and in order,
	// unkeyed messages up to MaxInFlight at once).
	Ordering Ordering
	// Topic shapes a topic created for the channel.
	Topic TopicOptions
	// DeadLetterTopic shapes a dead-letter topic created for the channel
	// (default: DefaultPartitions, the broker's replication factor and
	// topic configs: none of the channel's Topic settings, whose
	// compaction or short retention would refuse or drop dead letters).
	DeadLetterTopic TopicOptions
	// MaxWait bounds an empty fetch (default DefaultMaxWait). A message
	// never waits for it: a fetch returns as soon as there is one.
	MaxWait time.Duration
	// MaxBytes bounds one fetch response of a partition (default 1 MiB).
	MaxBytes int
	// ReadAheadBytes bounds the bytes of the messages a subscription has
	// read and holds without a slot (queued behind their key, waiting for
	// a retry's backoff), across its partitions (default
	// DefaultReadAheadBytes). The readers' queues hold about 2 x
	// MaxInFlight messages more, shared by the partitions.
	ReadAheadBytes int
	// CommitInterval is how often processed offsets are committed (default
	// DefaultCommitInterval). A crash redelivers what was processed since.
	CommitInterval time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the group
	// membership timings (defaults above). RebalanceTimeout is at least 3
	// HeartbeatIntervals (the options in effect are checked), so that a
	// hand-over has time for its commit.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
}

// Validate checks the options.
func (o ChannelOptions) Validate() error {
	switch {
	case o.Ordering < orderingUnset || o.Ordering > PerPartition:
		return fmt.Errorf("%w: kafka Ordering %d is unknown", broker.ErrInvalidOption, o.Ordering)
	case o.Topic.Partitions < 0, o.DeadLetterTopic.Partitions < 0:
		return fmt.Errorf("%w: kafka topic Partitions must be > 0", broker.ErrInvalidOption)
	case o.Topic.ReplicationFactor < -1, o.DeadLetterTopic.ReplicationFactor < -1:
		return fmt.Errorf("%w: kafka topic ReplicationFactor must be > 0 (or -1 for the broker's default)", broker.ErrInvalidOption)
	case o.MaxWait < 0, o.MaxBytes < 0, o.CommitInterval < 0, o.ReadAheadBytes < 0:
		return fmt.Errorf("%w: kafka MaxWait, MaxBytes, ReadAheadBytes and CommitInterval must be >= 0", broker.ErrInvalidOption)
	case o.SessionTimeout < 0, o.HeartbeatInterval < 0, o.RebalanceTimeout < 0:
		return fmt.Errorf("%w: kafka group timings must be >= 0", broker.ErrInvalidOption)
	case o.SessionTimeout > 0 && o.HeartbeatInterval >= o.SessionTimeout:
		return fmt.Errorf("%w: kafka HeartbeatInterval (%s) must be shorter than SessionTimeout (%s)",
			broker.ErrInvalidOption, o.HeartbeatInterval, o.SessionTimeout)
	case o.RebalanceTimeout > 0 && o.HeartbeatInterval > 0 && o.RebalanceTimeout < 3*o.HeartbeatInterval:
		// A hand-over ends by 3/4 of RebalanceTimeout less a heartbeat
		// (handoverSpan): below 3 heartbeats it would have no time left for
		// its commit.
		return fmt.Errorf("%w: kafka RebalanceTimeout (%s) must be at least 3 x HeartbeatInterval (%s)",
			broker.ErrInvalidOption, o.RebalanceTimeout, o.HeartbeatInterval)
	}
	return nil
}

func (o ChannelOptions) withDefaults() ChannelOptions {
	if o.Ordering == orderingUnset {
		// Keyed messages keep their order unless a channel opts out: a
		// producer that sets keys expects it.
		o.Ordering = PerKey
	}
	if o.Topic.Partitions == 0 {
		o.Topic.Partitions = DefaultPartitions
	}
	if o.Topic.ReplicationFactor == 0 {
		o.Topic.ReplicationFactor = DefaultReplicationFactor
	}
	if o.DeadLetterTopic.Partitions == 0 {
		o.DeadLetterTopic.Partitions = DefaultPartitions
	}
	if o.DeadLetterTopic.ReplicationFactor == 0 {
		o.DeadLetterTopic.ReplicationFactor = DefaultReplicationFactor
	}
	if o.MaxWait == 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 1 << 20
	}
	if o.ReadAheadBytes == 0 {
		o.ReadAheadBytes = DefaultReadAheadBytes
	}
	if o.CommitInterval == 0 {
		o.CommitInterval = DefaultCommitInterval
	}
	if o.SessionTimeout == 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = min(DefaultHeartbeatInterval, o.SessionTimeout/3)
	}
	if o.RebalanceTimeout == 0 {
		o.RebalanceTimeout = DefaultRebalanceTimeout
	}
	return o
}

// Option configures an Adapter.
type Option func(*Adapter) error

// WithChannelOptions sets the adapter-wide consumer and topic options.
func WithChannelOptions(o ChannelOptions) Option {
	return func(a *Adapter) error {
		if err := o.Validate(); err != nil {
			return err
		}
		a.chopts = kit.Overlay(a.chopts, o)
		return nil
	}
}

// WithTLS connects with TLS.
func WithTLS(cfg *tls.Config) Option {
	return func(a *Adapter) error {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		a.tls = cfg
		return nil
	}
}

// WithSASL authenticates with a SASL mechanism of kafka-go (plain.Mechanism,
// scram.Mechanism, or your own).
func WithSASL(m sasl.Mechanism) Option {
	return func(a *Adapter) error {
		if m == nil {
			return fmt.Errorf("%w: kafka SASL mechanism is nil", broker.ErrInvalidOption)
		}
		a.sasl = m
		return nil
	}
}

// WithClientID sets the client id shown to the brokers (default: the node id).
func WithClientID(id string) Option {
	return func(a *Adapter) error { a.clientID = id; return nil }
}

// WithDefaultAcks sets the acknowledgement level of every send (default AcksAll).
func WithDefaultAcks(acks Acks) Option {
	return func(a *Adapter) error {
		if acks < acksUnset || acks > AcksNone {
			return fmt.Errorf("%w: kafka Acks %d is unknown", broker.ErrInvalidOption, acks)
		}
		a.acks = acks
		return nil
	}
}

// WithMaxBatch sets the most messages of one partition in one produce
// request (default DefaultBatchSize). Sends never wait for a batch to
// fill: the messages sent while a partition's request is in flight go
// together in the next.
func WithMaxBatch(size int) Option {
	return func(a *Adapter) error {
		if size <= 0 {
			return fmt.Errorf("%w: kafka batch size must be > 0", broker.ErrInvalidOption)
		}
		a.batchSize = size
		return nil
	}
}

// WithSendBuffer bounds the bytes (keys, values and headers) of the sends
// waiting for the brokers (default DefaultSendBuffer). A send that finds it
// full waits for room until its ctx ends, then fails.
func WithSendBuffer(bytes int) Option {
	return func(a *Adapter) error {
		if bytes <= 0 {
			return fmt.Errorf("%w: kafka send buffer must be > 0 bytes", broker.ErrInvalidOption)
		}
		a.sendBuf = int64(bytes)
		return nil
	}
}

// WithTransport sets the kafka-go transport of sends and administrative
// requests, and the dialer of the readers and of the group, for settings
// the other options do not cover (dial timeouts, proxies, custom
// resolvers). TLS and SASL given with WithTLS/WithSASL or in the URL fill
// the ones they leave unset.
func WithTransport(t *kafkago.Transport, d *kafkago.Dialer) Option {
	return func(a *Adapter) error {
		a.transport, a.dialer = t, d
		return nil
	}
}

// parseURL reads kafka://[user:password@]host:port[,host:port...][?sasl=plain|scram-sha-256|scram-sha-512&tls=true].
// A comma list is a list of bootstrap brokers.
func parseURL(raw string) (brokers []string, display string, mech sasl.Mechanism, useTLS bool, err error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL is empty", broker.ErrInvalidOption)
	}
	u, perr := url.Parse(raw)
	if perr != nil {
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL: %w", broker.ErrInvalidOption, broker.Redacted(perr))
	}
	switch strings.ToLower(u.Scheme) {
	case "kafka":
	case "kafka+ssl", "kafkas":
		useTLS = true
	default:
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL scheme must be kafka://, got %q", broker.ErrInvalidOption, u.Scheme)
	}
	// An unescaped "#", "/", "?" or "@" in a password cuts the URL short
	// ("kafka://u:123#abc@h" parses as host "u", port 123): it would dial
	// the wrong host and show the password as a host.
	if shown := broker.DisplayURL(raw); !strings.EqualFold(shown, u.Scheme+"://"+u.Host) {
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL %s: the userinfo holds a character that must be percent-encoded (#, /, ? or @)",
			broker.ErrInvalidOption, shown)
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if !strings.Contains(h, ":") {
			h += ":9092"
		}
		brokers = append(brokers, h)
	}
	if len(brokers) == 0 {
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL has no broker", broker.ErrInvalidOption)
	}
	q := u.Query()
	switch strings.ToLower(q.Get("tls")) {
	case "", "false", "0":
	case "true", "1":
		useTLS = true
	default:
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL tls=%q is not a boolean", broker.ErrInvalidOption, q.Get("tls"))
	}
	user, pass := "", ""
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	switch m := strings.ToLower(q.Get("sasl")); m {
	case "":
		if user != "" {
			mech = plain.Mechanism{Username: user, Password: pass}
		}
	case "plain":
		mech = plain.Mechanism{Username: user, Password: pass}
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if m == "scram-sha-512" {
			algo = scram.SHA512
		}
		if mech, err = scram.Mechanism(algo, user, pass); err != nil {
			return nil, "", nil, false, fmt.Errorf("%w: kafka SCRAM: %w", broker.ErrInvalidOption, broker.Redacted(err))
		}
	default:
		return nil, "", nil, false, fmt.Errorf("%w: kafka URL sasl=%q: use plain, scram-sha-256 or scram-sha-512", broker.ErrInvalidOption, m)
	}
	return brokers, "kafka://" + strings.Join(brokers, ","), mech, useTLS, nil
}
