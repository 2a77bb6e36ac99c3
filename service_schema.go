package channels

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

// Message is one delivery handed to a channel handler.
type Message = broker.Message

// Handler processes one delivery: nil acknowledges, an error is retried,
// then dead-lettered or dropped. Panics are recovered and count as errors.
type Handler = broker.Handler

// SendFunc is the type of the send function injected into schemas (the
// field named by SendMethodName, "SendToChannel" by default).
type SendFunc = hooks.SendFunc

// Interceptor bundles a localChannel and a sendToChannel hook (see package hooks).
type Interceptor = hooks.Interceptor

// Info describes the channel an interceptor wraps.
type Info = hooks.Info

// TriggerFunc calls a declared channel handler directly, with no broker:
// the payload is serialized, wrapped in a Message (attempt 1) and handed to
// the handler through the interceptors. It is injected into the schema field
// named by ChannelHandlerTrigger ("EmitLocalChannelHandler" by default), for
// unit tests. channel is the key declared in the schema.
type TriggerFunc func(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error

// NoRetries is the MaxRetries value that disables retries, in a Channel and
// in WithMaxRetries. MaxRetries counts redeliveries after the first attempt
// (MaxRetries 2 runs a handler up to 3 times); a Channel's 0 means "unset":
// the plugin default.
const NoRetries = -1

// Channels declares a service's channel handlers, keyed by channel name
// (before the namespace prefix). Channel names, with their prefix, are one
// or more tokens of ASCII letters, digits, '_' and '-' separated by single
// dots, at most MaxNameLength bytes: the names every broker accepts as they
// are (Redis stream, AMQP exchange, NATS subject, Kafka topic).
type Channels map[string]Channel

// Channel is one channel declaration. Only Handler is required; zero values
// take the plugin-wide defaults.
type Channel struct {
	// Name replaces the key as the broker-side channel name, verbatim (no
	// prefix); the same character rules apply.
	Name string
	// Group is the consumer group; the default is the service full name
	// ("v2.payments", or "payments" without a version). The character rules
	// of channel names apply (Register refuses others).
	Group string
	// MaxInFlight bounds concurrently running handlers of this channel on
	// this node (0 = plugin default, 1 unless changed).
	MaxInFlight int
	// MaxRetries is the number of redeliveries after the first attempt:
	// >= 1, or NoRetries for none; 0 takes the plugin default
	// (WithMaxRetries, 3 unless set).
	MaxRetries int
	// Backoff is the delay before each retry (nil = plugin default).
	Backoff broker.Backoff
	// MaxDeliveries bounds the deliveries of one message, failed runs and
	// runs that never ended (the consumer was killed) together: a message
	// that keeps crashing its consumers is dead-lettered (or dropped) with
	// broker.ErrMaxDeliveries once over it. 0 = MaxRetries + 1 +
	// broker.DefaultExtraDeliveries (5); otherwise at least MaxRetries + 1
	// (Register refuses less).
	MaxDeliveries int
	// DeadLettering overrides the plugin's dead-letter settings.
	DeadLettering *DeadLettering
	// Start is where the group starts reading when it is created:
	// StartNewest, StartOldest or StartAt(t); the zero value leaves it to
	// the adapter (its own option, else the newest messages). A group that
	// exists keeps its position. An adapter that cannot honour it fails
	// Register with an error wrapping ErrUnsupported (see docs/portable.md).
	Start StartPosition
	// Handler processes the messages.
	Handler Handler
	// AdapterOptions holds typed options of the adapter in use (for example
	// redis.ChannelOptions); a value of another adapter's type, or a bad
	// value, fails Register with ErrInvalidOption (an adapter that is not a
	// broker.ChannelChecker reports it at Start).
	AdapterOptions []any
}

// DeadLettering configures the dead-letter queue of a channel.
type DeadLettering struct {
	Enabled bool
	// QueueName is the dead-letter channel (prefixed with the namespace);
	// default "FAILED_MESSAGES".
	QueueName string
	// ExchangeName is the AMQP dead-letter exchange (prefixed); default "DEAD_LETTER".
	ExchangeName string
	// RefusalWindow: a message whose dead letter the broker refuses is
	// dropped (with an error log and broker.ErrDeadLetterRefused) after
	// MaxDeliveries refusals spread over at least this long; default
	// broker.DefaultRefusalWindow (30 s).
	RefusalWindow time.Duration
}

// On declares a channel with only a handler (the moleculer shorthand).
func On(h Handler) Channel { return Channel{Handler: h} }

// Typed adapts a function that takes the decoded payload. A payload that
// does not decode into T is a poison message: it is not retried.
func Typed[T any](fn func(ctx context.Context, payload T, msg *Message) error) Handler {
	return func(ctx context.Context, msg *Message) error {
		var v T
		if err := msg.Decode(&v); err != nil {
			return err
		}
		return fn(ctx, v, msg)
	}
}

var (
	channelsType = reflect.TypeOf(Channels(nil))
	sendType     = reflect.TypeOf(SendFunc(nil))
	triggerType  = reflect.TypeOf(TriggerFunc(nil))
	adapterType  = reflect.TypeOf((*broker.Adapter)(nil)).Elem()
)

// schema is one registered service schema.
type schema struct {
	ptr      reflect.Value // pointer to the struct
	name     string        // from a Name field, if any
	version  string        // from a Version field, if any
	channels Channels
}

// readSchema validates a schema and reads its channels.
func (p *Plugin) readSchema(s any) (*schema, error) {
	v := reflect.ValueOf(s)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: schema must be a non-nil pointer to a struct, got %T", ErrInvalidSchema, s)
	}
	st := v.Elem()
	out := &schema{ptr: v}
	if f := st.FieldByName("Name"); f.IsValid() && f.Kind() == reflect.String {
		out.name = f.String()
	}
	if f := st.FieldByName("Version"); f.IsValid() && f.Kind() == reflect.String {
		out.version = f.String()
	}
	for _, fld := range []struct {
		name string
		typ  reflect.Type
	}{
		{p.o.schemaProperty, channelsType},
		{p.o.sendMethodName, sendType},
		{p.o.adapterPropertyName, adapterType},
		{p.o.channelHandlerTrigger, triggerType},
	} {
		sf, ok := st.Type().FieldByName(fld.name)
		if !ok {
			continue
		}
		if sf.Type != fld.typ {
			return nil, fmt.Errorf("%w: %s.%s has type %s, want %s", ErrInvalidSchema, st.Type(), fld.name, sf.Type, fld.typ)
		}
		if !sf.IsExported() {
			return nil, fmt.Errorf("%w: %s.%s must be exported", ErrInvalidSchema, st.Type(), fld.name)
		}
	}
	if f := st.FieldByName(p.o.schemaProperty); f.IsValid() {
		out.channels = f.Interface().(Channels)
	}
	if err := p.checkNameOptions(st.Type(), len(out.channels) > 0); err != nil {
		return nil, err
	}
	for key, ch := range out.channels {
		if key == "" && ch.Name == "" {
			return nil, fmt.Errorf("%w: %s: channel with an empty name", ErrInvalidSchema, st.Type())
		}
		if err := p.checkChannelNames(key, ch); err != nil {
			return nil, fmt.Errorf("%s.%s[%q]: %w", st.Type(), p.o.schemaProperty, key, err)
		}
		if ch.Handler == nil {
			return nil, fmt.Errorf("%w: %w: %s.%s[%q]", ErrInvalidSchema, ErrNoHandler, st.Type(), p.o.schemaProperty, key)
		}
		if ch.MaxInFlight < 0 {
			return nil, fmt.Errorf("%w: channel %q: MaxInFlight must be >= 1 (0 for the default)", ErrInvalidOption, key)
		}
		if ch.MaxRetries < NoRetries {
			return nil, fmt.Errorf("%w: channel %q: MaxRetries must be >= 1, NoRetries, or 0 for the plugin default", ErrInvalidOption, key)
		}
	}
	return out, nil
}

// checkChannelNames validates the broker-side names of a declaration.
func (p *Plugin) checkChannelNames(key string, ch Channel) error {
	if ch.Name != "" {
		if err := checkName("channel name", ch.Name); err != nil {
			return err
		}
	} else if err := checkName("channel name", prefixed(p.o.namespace, key)); err != nil {
		return err
	}
	if dl := ch.DeadLettering; dl != nil {
		if dl.QueueName != "" {
			if err := checkName("dead-letter queue name", prefixed(p.o.namespace, dl.QueueName)); err != nil {
				return err
			}
		}
		if dl.ExchangeName != "" {
			if err := checkName("dead-letter exchange name", prefixed(p.o.namespace, dl.ExchangeName)); err != nil {
				return err
			}
		}
	}
	return nil
}

// inject sets the send function, adapter and trigger fields that exist.
func (p *Plugin) inject(s *schema) {
	st := s.ptr.Elem()
	if f := st.FieldByName(p.o.sendMethodName); f.IsValid() {
		f.Set(reflect.ValueOf(SendFunc(p.SendToChannel)))
	}
	if f := st.FieldByName(p.o.adapterPropertyName); f.IsValid() && p.adapter != nil {
		f.Set(reflect.ValueOf(&p.adapter).Elem())
	}
	if f := st.FieldByName(p.o.channelHandlerTrigger); f.IsValid() {
		f.Set(reflect.ValueOf(TriggerFunc(func(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error {
			return p.trigger(ctx, s, channel, payload, opts...)
		})))
	}
}

// FullName is the moleculer service full name: "v2.payments" for name
// "payments" and version "2"; a version that is empty or go-micro's default
// "latest" gives the bare name.
func FullName(name, version string) string {
	if version == "" || version == "latest" {
		return name
	}
	if isDigits(version) {
		return "v" + version + "." + name
	}
	return version + "." + name
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// prefixed applies the namespace: "ns.name", or name without a namespace.
func prefixed(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "." + name
}

// resolved is a channel ready to subscribe.
type resolved struct {
	key     string
	service string
	ch      *broker.Channel
	info    hooks.Info
	entry   broker.Handler // context wrapper + interceptors + user handler
}

// resolve computes names and policies of every channel of a schema, and
// composes their handlers.
func (p *Plugin) resolve(s *schema, svcName, svcVersion string) ([]*resolved, error) {
	return p.resolveWith(s, svcName, svcVersion, true)
}

// resolveWith is resolve; without compose the channels get the declared
// handler as it is (for checking a declaration: no interceptor is called).
func (p *Plugin) resolveWith(s *schema, svcName, svcVersion string, compose bool) ([]*resolved, error) {
	name, version := s.name, s.version
	if name == "" {
		name, version = svcName, svcVersion
	}
	if name == "" {
		return nil, fmt.Errorf("%w: %s has no service name: give it a Name field, use channels.WithService, or install the plugin on a micro.Service",
			ErrInvalidSchema, s.ptr.Elem().Type())
	}
	full := FullName(name, version)
	out := make([]*resolved, 0, len(s.channels))
	for key, decl := range s.channels {
		chName := decl.Name
		if chName == "" {
			chName = prefixed(p.o.namespace, key)
		}
		group := decl.Group
		if group == "" {
			group = full
		}
		if err := checkName("group", group); err != nil {
			return nil, fmt.Errorf("%s.%s[%q]: %w", s.ptr.Elem().Type(), p.o.schemaProperty, key, err)
		}
		mif := decl.MaxInFlight
		if mif == 0 {
			mif = p.o.maxInFlight
		}
		retries := decl.MaxRetries
		switch {
		case retries == NoRetries:
			retries = 0
		case retries == 0:
			retries = p.o.maxRetries
		}
		backoff := decl.Backoff
		if backoff == nil {
			backoff = p.o.backoff
		}
		dl := p.o.deadLettering
		if decl.DeadLettering != nil {
			dl = *decl.DeadLettering
		}
		if dl.QueueName == "" {
			dl.QueueName = broker.DefaultDeadLetterQueue
		}
		if dl.ExchangeName == "" {
			dl.ExchangeName = broker.DefaultDeadLetterExchange
		}
		bc := &broker.Channel{
			Name:         chName,
			Group:        group,
			ConsumerName: p.consumerName(full, chName),
			MaxInFlight:  mif,
			Retry:        broker.RetryPolicy{MaxRetries: retries, Backoff: backoff, MaxDeliveries: decl.MaxDeliveries},
			Start:        decl.Start,
			DeadLetter: broker.DeadLetterPolicy{Enabled: dl.Enabled,
				Queue: prefixed(p.o.namespace, dl.QueueName), Exchange: prefixed(p.o.namespace, dl.ExchangeName),
				RefusalWindow: dl.RefusalWindow},
			AdapterOptions: decl.AdapterOptions,
			Serializer:     p.o.serializer,
			Logger:         p.o.logger,
			Now:            time.Now,
		}
		r := &resolved{key: key, service: full, ch: bc}
		r.info = hooks.Info{Service: full, Key: key, Channel: chName, Group: group, Adapter: p.adapterName(), MaxInFlight: mif}
		if compose {
			r.entry = p.contextWrapper(r, p.tel.handler(bc, p.adapterName(),
				hooks.ChainHandler(decl.Handler, r.info, append(p.o.interceptors[:len(p.o.interceptors):len(p.o.interceptors)], p.serverICs...))))
			bc.Handler = r.entry
			bc.Observer = p.tel.observer(bc, p.adapterName())
		} else {
			bc.Handler = decl.Handler
		}
		if err := bc.Validate(); err != nil {
			return nil, fmt.Errorf("%s.%s[%q]: %w", s.ptr.Elem().Type(), p.o.schemaProperty, key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// consumerName is "<instance>.<service full name>.<channel>", the instance
// being the node id made unique among the plugins of this process.
func (p *Plugin) consumerName(service, channel string) string {
	id := p.instance
	if id == "" {
		id = p.nodeID
	}
	return strings.Join([]string{id, service, channel}, ".")
}

// trigger runs a declared handler directly (the EmitLocalChannelHandler analog).
func (p *Plugin) trigger(ctx context.Context, s *schema, key string, payload any, opts ...broker.PublishOption) error {
	decl, ok := s.channels[key]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownChannel, key)
	}
	p.mu.Lock()
	svc, ver := p.serviceIdentity()
	if s.name == "" && svc == "" {
		svc = "local"
	}
	rs, err := p.resolve(&schema{ptr: s.ptr, name: s.name, version: s.version, channels: Channels{key: decl}}, svc, ver)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	r := rs[0]
	po, err := broker.NewPublishOptions(opts...)
	if err != nil {
		return err
	}
	body, err := p.encode(r.ch.Name, payload, po.Raw)
	if err != nil {
		return err
	}
	headers, err := p.outgoingHeaders(ctx, po.Headers)
	if err != nil {
		return err
	}
	msg := broker.NewMessage(p.o.serializer)
	msg.Channel, msg.Group, msg.ID, msg.Attempt = r.ch.Name, r.ch.Group, "local", 1
	msg.Payload, msg.Headers, msg.Timestamp = body, headers, time.Now()
	return r.entry(ctx, msg)
}
