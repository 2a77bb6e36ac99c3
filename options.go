package channels

import (
	"fmt"
	"go/token"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

// Defaults of the plugin options.
const (
	DefaultSchemaProperty        = "Channels"
	DefaultSendMethodName        = "SendToChannel"
	DefaultAdapterPropertyName   = "ChannelAdapter"
	DefaultChannelHandlerTrigger = "EmitLocalChannelHandler"
	// DefaultConnectTimeout bounds Start when its context has no deadline.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultStopTimeout bounds the drain of Stop when its context has no deadline.
	DefaultStopTimeout = 30 * time.Second
	// DefaultPublishTimeout bounds SendToChannel when its context has no deadline.
	DefaultPublishTimeout = 10 * time.Second
	// DefaultMaxPayloadSize bounds the serialized payload of a message, sent
	// or received (1 MiB, the default message limit of NATS and Kafka).
	DefaultMaxPayloadSize = 1 << 20
	// DefaultMaxMetaSize bounds the $meta header of a message, sent or
	// received (64 KiB of base64).
	DefaultMaxMetaSize = 64 << 10
	// MaxMetaEntries bounds the top-level entries of a received $meta; more
	// are refused before they are decoded.
	MaxMetaEntries = broker.MaxHeaders
)

// Option configures a Plugin.
type Option func(*options) error

type options struct {
	adapterSpec           any
	schemaProperty        string
	sendMethodName        string
	adapterPropertyName   string
	channelHandlerTrigger string
	namesSet              [4]bool
	namespace             string
	interceptors          []hooks.Interceptor
	logger                *slog.Logger
	serializer            broker.Serializer
	nodeID                string
	serviceName           string
	serviceVersion        string
	maxInFlight           int
	maxRetries            int
	backoff               broker.Backoff
	deadLettering         DeadLettering
	connectTimeout        time.Duration
	stopTimeout           time.Duration
	publishTimeout        time.Duration
	meterProvider         metric.MeterProvider
	tracerProvider        trace.TracerProvider
	observers             []Observer
	noSubWrappers         bool
	maxPayloadSize        int
	maxMetaSize           int
	meta                  metaPolicy
	traceLinkOnly         bool
}

func defaultOptions() options {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return options{
		schemaProperty:        DefaultSchemaProperty,
		sendMethodName:        DefaultSendMethodName,
		adapterPropertyName:   DefaultAdapterPropertyName,
		channelHandlerTrigger: DefaultChannelHandlerTrigger,
		logger:                defaultLogger(),
		serializer:            broker.JSON{},
		nodeID:                host + "-" + strconv.Itoa(os.Getpid()),
		maxInFlight:           broker.DefaultMaxInFlight,
		maxRetries:            broker.DefaultMaxRetries,
		backoff:               broker.DefaultBackoff,
		deadLettering:         DeadLettering{QueueName: broker.DefaultDeadLetterQueue, ExchangeName: broker.DefaultDeadLetterExchange},
		connectTimeout:        DefaultConnectTimeout,
		stopTimeout:           DefaultStopTimeout,
		publishTimeout:        DefaultPublishTimeout,
		maxPayloadSize:        DefaultMaxPayloadSize,
		maxMetaSize:           DefaultMaxMetaSize,
		meta:                  metaPolicy{deny: DefaultMetaDenied()},
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

// WithAdapter sets the adapter: a URL ("redis://127.0.0.1:6379"), a type
// name ("Redis", "Memory") or a broker.Adapter value. URL schemes and type
// names come from the adapter packages you import. Required.
func WithAdapter(adapter any) Option {
	return func(o *options) error {
		switch a := adapter.(type) {
		case string:
			if a == "" {
				return invalid("adapter is empty")
			}
		case broker.Adapter:
			if a == nil {
				return invalid("adapter is nil")
			}
		default:
			return invalid("adapter must be a URL, a type name or a broker.Adapter, got %T", adapter)
		}
		o.adapterSpec = adapter
		return nil
	}
}

// Indexes of the schema field names in options.names.
const (
	nameSchemaProperty = iota
	nameSendMethod
	nameAdapterProperty
	nameTrigger
)

// fieldName is a schema field name option.
type fieldName struct {
	value  string
	option string // the option that sets it, for error messages
	set    bool   // given explicitly
}

// names returns the schema field names, in the order of the name* indexes.
func (o *options) names() [4]fieldName {
	return [4]fieldName{
		{o.schemaProperty, "WithSchemaProperty", o.namesSet[nameSchemaProperty]},
		{o.sendMethodName, "WithSendMethodName", o.namesSet[nameSendMethod]},
		{o.adapterPropertyName, "WithAdapterPropertyName", o.namesSet[nameAdapterProperty]},
		{o.channelHandlerTrigger, "WithChannelHandlerTrigger", o.namesSet[nameTrigger]},
	}
}

func nameOption(what string, idx int, dst func(*options) *string) func(string) Option {
	return func(name string) Option {
		return func(o *options) error {
			if name == "" {
				return invalid("%s is empty", what)
			}
			if !token.IsIdentifier(name) || !token.IsExported(name) {
				return invalid("%s %q is not an exported Go field name", what, name)
			}
			*dst(o) = name
			o.namesSet[idx] = true
			return nil
		}
	}
}

// The schema field names. A name given with one of these options must be a
// field of every registered schema that declares channels (Register fails
// otherwise, naming the option); the defaults are optional fields.
var (
	// WithSchemaProperty names the schema field holding the Channels (default "Channels").
	WithSchemaProperty = nameOption("schema property", nameSchemaProperty, func(o *options) *string { return &o.schemaProperty })
	// WithSendMethodName names the schema field that receives the SendFunc (default "SendToChannel").
	WithSendMethodName = nameOption("send method name", nameSendMethod, func(o *options) *string { return &o.sendMethodName })
	// WithAdapterPropertyName names the schema field that receives the adapter (default "ChannelAdapter").
	WithAdapterPropertyName = nameOption("adapter property name", nameAdapterProperty, func(o *options) *string { return &o.adapterPropertyName })
	// WithChannelHandlerTrigger names the schema field that receives the TriggerFunc (default "EmitLocalChannelHandler").
	WithChannelHandlerTrigger = nameOption("channel handler trigger", nameTrigger, func(o *options) *string { return &o.channelHandlerTrigger })
)

// WithNamespace prefixes every channel and dead-letter queue name with
// "namespace." (moleculer's prefix; empty by default). Like channel names,
// a namespace is made of ASCII letters, digits, '_' and '-', with single
// dots between tokens.
func WithNamespace(ns string) Option {
	return func(o *options) error {
		if ns != "" {
			if err := checkName("namespace", ns); err != nil {
				return err
			}
		}
		o.namespace = ns
		return nil
	}
}

// WithInterceptors appends interceptors; the first registered is the outermost.
func WithInterceptors(ics ...hooks.Interceptor) Option {
	return func(o *options) error {
		for i, ic := range ics {
			if ic.LocalChannel == nil && ic.SendToChannel == nil && ic.SendBatch == nil {
				return invalid("interceptor %d (%q) has no hook", i, ic.Name)
			}
		}
		o.interceptors = append(o.interceptors, ics...)
		return nil
	}
}

// WithServerSubWrappers decides whether the subscriber wrappers of the
// go-micro server the plugin is installed on (micro.WrapSubscriber) wrap
// the channel handlers too: yes by default, inside the plugin's own
// interceptors, in the server's order, seeing a server.Message whose Topic
// is the channel (see FromSubscriberWrapper).
func WithServerSubWrappers(on bool) Option {
	return func(o *options) error { o.noSubWrappers = !on; return nil }
}

// WithLogger sets the logger (by default warnings and errors go to
// slog.Default(), so a dropped message is never silent). The plugin and its
// adapters log through it with credentials hidden: URLs with a password,
// parseable or not, and password=/token=-style pairs are redacted in the
// message and in every string, error and Stringer attribute.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return invalid("logger is nil")
		}
		o.logger = redactLogger(l)
		return nil
	}
}

// WithSerializer sets the payload serializer (broker.JSON by default;
// broker.MsgPack and broker.Raw are built in). Services sharing a channel
// must use the same one.
func WithSerializer(s broker.Serializer) Option {
	return func(o *options) error {
		if s == nil {
			return invalid("serializer is nil")
		}
		o.serializer = s
		return nil
	}
}

// WithNodeID sets the node identity from which consumer names are derived
// (default "hostname-pid"): "<node id>.<service>.<channel>". A stable id
// keeps broker-side consumer names stable across restarts; two live
// processes must not share one. Within a process, plugins connected with
// one node id get distinct names: the first the node id itself, the next
// ones "<node id>-2", "<node id>-3"...
func WithNodeID(id string) Option {
	return func(o *options) error {
		if id == "" {
			return invalid("node id is empty")
		}
		o.nodeID = id
		return nil
	}
}

// WithService sets the service name and version used for default groups
// when a schema has no Name field and the plugin is not installed on a
// micro.Service.
func WithService(name, version string) Option {
	return func(o *options) error {
		if name == "" {
			return invalid("service name is empty")
		}
		o.serviceName, o.serviceVersion = name, version
		return nil
	}
}

// WithMaxInFlight sets the default per-channel bound on running handlers (default 1).
func WithMaxInFlight(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return invalid("MaxInFlight must be >= 1, got %d", n)
		}
		o.maxInFlight = n
		return nil
	}
}

// WithMaxRetries sets the default number of redeliveries after the first
// attempt: n >= 1, or NoRetries for none (default 3,
// broker.DefaultMaxRetries). It is the convention of Channel.MaxRetries,
// where 0 means "unset, use the default"; an option is never unset, so
// WithMaxRetries(0) is an error rather than a silent default.
func WithMaxRetries(n int) Option {
	return func(o *options) error {
		switch {
		case n == NoRetries:
			o.maxRetries = 0
		case n >= 1:
			o.maxRetries = n
		case n == 0:
			return invalid("MaxRetries 0: use channels.NoRetries for no retries, or leave WithMaxRetries out for the default (%d)", broker.DefaultMaxRetries)
		default:
			return invalid("MaxRetries must be >= 1 or channels.NoRetries, got %d", n)
		}
		return nil
	}
}

// WithBackoff sets the default delay before retries (default 100ms doubling up to 30s).
func WithBackoff(b broker.Backoff) Option {
	return func(o *options) error {
		if b == nil {
			return invalid("backoff is nil")
		}
		o.backoff = b
		return nil
	}
}

// WithDeadLettering sets the default dead-letter settings (disabled by
// default; queue "FAILED_MESSAGES", AMQP exchange "DEAD_LETTER").
func WithDeadLettering(d DeadLettering) Option {
	return func(o *options) error {
		if d.QueueName == "" {
			d.QueueName = broker.DefaultDeadLetterQueue
		}
		if d.ExchangeName == "" {
			d.ExchangeName = broker.DefaultDeadLetterExchange
		}
		if err := checkName("dead-letter queue name", d.QueueName); err != nil {
			return err
		}
		if err := checkName("dead-letter exchange name", d.ExchangeName); err != nil {
			return err
		}
		o.deadLettering = d
		return nil
	}
}

// WithTimeouts sets the bounds used when a context has no deadline:
// connect (Start), stop (drain) and publish. Zero keeps a default.
func WithTimeouts(connect, stop, publish time.Duration) Option {
	return func(o *options) error {
		if connect < 0 || stop < 0 || publish < 0 {
			return invalid("timeouts must be >= 0")
		}
		if connect > 0 {
			o.connectTimeout = connect
		}
		if stop > 0 {
			o.stopTimeout = stop
		}
		if publish > 0 {
			o.publishTimeout = publish
		}
		return nil
	}
}

// WithMaxPayloadSize bounds the serialized payload of a message (default
// DefaultMaxPayloadSize, 1 MiB). A larger send fails with an *EncodeError
// wrapping broker.ErrTooLarge before it reaches the broker; a larger
// received payload is poison (a *DecodeError: dead-lettered or dropped,
// never run). Raise it on every service of a channel together. Whatever
// the size, the JSON and MsgPack decoders also bound the values they
// build (broker.EntryBudget).
func WithMaxPayloadSize(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return invalid("MaxPayloadSize must be >= 1, got %d", n)
		}
		o.maxPayloadSize = n
		return nil
	}
}

// WithMaxMetaSize bounds the $meta header of a message, base64 as it is on
// the wire (default DefaultMaxMetaSize, 64 KiB): a send whose $meta is
// larger fails with an *EncodeError wrapping broker.ErrTooLarge; a received
// one is poison. A received $meta of more than MaxMetaEntries top-level
// entries is poison too, refused before its entries are decoded.
func WithMaxMetaSize(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return invalid("MaxMetaSize must be >= 1, got %d", n)
		}
		o.maxMetaSize = n
		return nil
	}
}

// WithMetaAllow lets keys of DefaultMetaDenied (or of WithMetaDeny) cross
// channels after all, both ways: each pattern is a key matched whatever its
// case, or a prefix ending in "*" ("*" alone lets every key through). Only
// for channels whose every producer is trusted: whoever can publish to the
// channel chooses these values, and go-micro's client forwards the
// Authorization of a handler's ctx to every call made with it.
func WithMetaAllow(patterns ...string) Option {
	return func(o *options) error {
		if err := checkMetaPatterns(patterns); err != nil {
			return err
		}
		o.meta.allow = append(o.meta.allow, patterns...)
		return nil
	}
}

// WithMetaDeny adds keys that cross channels in neither direction to
// DefaultMetaDenied: keys matched whatever their case, or prefixes ending in
// "*".
func WithMetaDeny(patterns ...string) Option {
	return func(o *options) error {
		if err := checkMetaPatterns(patterns); err != nil {
			return err
		}
		o.meta.deny = append(o.meta.deny, patterns...)
		return nil
	}
}

// WithMetaPropagation turns the crossing of metadata on (the default) or
// off. Off, a received $meta is still decoded into CallInfo.Meta (without
// the denied keys) but not put into the handler's go-micro metadata, and a
// send carries as $meta only what WithMeta gave it: neither the go-micro
// metadata of its ctx nor the $meta its handler received.
func WithMetaPropagation(on bool) Option {
	return func(o *options) error { o.meta.off = !on; return nil }
}

func checkMetaPatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return invalid("empty metadata key pattern")
		}
		if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
			return invalid("metadata key pattern %q: '*' may only end a pattern", p)
		}
	}
	return nil
}
