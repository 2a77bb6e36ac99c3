package channels

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

// Instrumentation scope of the plugin's metrics and spans.
const instrumentationName = "github.com/microchannels/channels"

// Metric names. Every counter carries the attributes channel, group (not on
// sends) and adapter; they are counted in the adapter kit, so every adapter
// reports the same numbers for the same events.
const (
	MetricSent         = "channels.messages.sent"          // sends accepted by the broker
	MetricSendErrors   = "channels.messages.send_errors"   // sends that returned an error
	MetricReceived     = "channels.messages.received"      // deliveries settled (run or given up)
	MetricActive       = "channels.messages.active"        // handlers running
	MetricHandlerTime  = "channels.handler.duration"       // handler run time, seconds
	MetricErrors       = "channels.messages.errors"        // handler runs that returned an error
	MetricRetries      = "channels.messages.retries"       // failed runs handed back for a retry
	MetricDeadLettered = "channels.messages.dead_lettered" // copies written to the dead-letter queue
	MetricDropped      = "channels.messages.dropped"       // messages dropped after their last attempt
	MetricReleased     = "channels.messages.released"      // handed back unrun or cut by a stop
	MetricRedelivered  = "channels.messages.redelivered"   // deliveries after a run that never ended (a crash)
	MetricLag          = "channels.consumer.lag"           // entries not yet delivered to the group, where the broker tells
	MetricPending      = "channels.consumer.pending"       // entries delivered and not yet acknowledged
)

// WithMeterProvider reports the plugin's metrics (the Metric* names) to mp,
// an OpenTelemetry meter provider (no SDK is imposed: pass your own). Off by
// default.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) error {
		if mp == nil {
			return invalid("meter provider is nil")
		}
		o.meterProvider = mp
		return nil
	}
}

// WithTracerProvider traces every send (a producer span) and every handler
// run (a consumer span) with tp. The trace context travels in the message
// headers with the W3C propagator (traceparent, tracestate), so a trace
// crosses services, Go or Node, that keep headers; a send from a handler's
// ctx is a child of its run. Off by default.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) error {
		if tp == nil {
			return invalid("tracer provider is nil")
		}
		o.tracerProvider = tp
		return nil
	}
}

// WithObserver adds an outcome hook: it sees how every delivery ended
// (Event.Outcome.Action: ack, retry with a delay, dead-letter, drop,
// release), after the message was settled. Hooks run in order, on the
// handler's goroutine.
func WithObserver(o Observer) Option {
	return func(opts *options) error {
		if o == nil {
			return invalid("observer is nil")
		}
		opts.observers = append(opts.observers, o)
		return nil
	}
}

// telemetry holds the plugin's instruments; with no provider given they are
// no-ops and tracing is off.
type telemetry struct {
	metrics   bool         // a meter provider was given
	tracer    trace.Tracer // nil: tracing off
	prop      propagation.TextMapPropagator
	observers []Observer
	// traceLinkOnly: a consumer span starts a trace of its own, linked to
	// the producer's (WithTraceParentAsLink).
	traceLinkOnly bool

	sent, sendErrors, received, errors, retries, deadLettered, dropped, released, redelivered metric.Int64Counter
	active                                                                                    metric.Int64UpDownCounter
	handlerTime                                                                               metric.Float64Histogram
	lagReg                                                                                    metric.Registration

	mu     sync.Mutex
	lagged map[*broker.Channel]metric.MeasurementOption
}

func newTelemetry(mp metric.MeterProvider, tp trace.TracerProvider, observers []Observer) (*telemetry, error) {
	var m metric.Meter
	if mp == nil {
		m = noop.NewMeterProvider().Meter(instrumentationName)
	} else {
		m = mp.Meter(instrumentationName)
	}
	t := &telemetry{metrics: mp != nil, observers: observers, prop: propagation.TraceContext{},
		lagged: map[*broker.Channel]metric.MeasurementOption{}}
	if tp != nil {
		t.tracer = tp.Tracer(instrumentationName)
	}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		c, e := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit("{message}"))
		if err == nil {
			err = e
		}
		return c
	}
	t.sent = counter(MetricSent, "Messages sent and accepted by the broker.")
	t.sendErrors = counter(MetricSendErrors, "Sends that returned an error.")
	t.received = counter(MetricReceived, "Deliveries settled, whether the handler ran or the message was given up.")
	t.errors = counter(MetricErrors, "Handler runs that returned an error.")
	t.retries = counter(MetricRetries, "Failed runs handed back for a retry.")
	t.deadLettered = counter(MetricDeadLettered, "Messages written to the dead-letter queue.")
	t.dropped = counter(MetricDropped, "Messages dropped after their last attempt (dead-lettering off).")
	t.released = counter(MetricReleased, "Messages handed back unrun, or whose run was cut by a stop.")
	t.redelivered = counter(MetricRedelivered, "Deliveries that follow a delivery whose run never ended (a crash).")
	if t.active, err = m.Int64UpDownCounter(MetricActive, metric.WithDescription("Handlers running."),
		metric.WithUnit("{message}")); err != nil {
		return nil, err
	}
	if t.handlerTime, err = m.Float64Histogram(MetricHandlerTime, metric.WithDescription("Handler run time."),
		metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return t, err
}

// channelAttrs are the attributes of one subscribed channel.
func channelAttrs(ch *broker.Channel, adapter string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String("channel", ch.Name),
		attribute.String("group", ch.Group), attribute.String("adapter", adapter)))
}

// measureOpts holds the option lists of one channel's measurements, built
// once: passing attrs as a variadic argument would allocate a slice at
// every measurement. The instruments only read them.
type measureOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func channelMeasureOpts(ch *broker.Channel, adapter string) measureOpts {
	attrs := channelAttrs(ch, adapter)
	return measureOpts{add: []metric.AddOption{attrs}, rec: []metric.RecordOption{attrs}}
}

// observer returns the kit observer of one channel: metrics, then the
// user's outcome hooks.
// With neither metrics nor hooks it is nil: nothing runs per message.
func (t *telemetry) observer(ch *broker.Channel, adapter string) broker.Observer {
	if !t.metrics && len(t.observers) == 0 {
		return nil
	}
	mo := channelMeasureOpts(ch, adapter)
	return func(ctx context.Context, e broker.Event) {
		if t.metrics {
			t.count(ctx, e, mo)
		}
		for _, o := range t.observers {
			o(ctx, e)
		}
	}
}

// count records one settled delivery in the metrics.
func (t *telemetry) count(ctx context.Context, e broker.Event, mo measureOpts) {
	t.received.Add(ctx, 1, mo.add...)
	if e.Ran {
		t.handlerTime.Record(ctx, e.Took.Seconds(), mo.rec...)
		if e.Outcome.Err != nil && e.Outcome.Action != broker.Release {
			t.errors.Add(ctx, 1, mo.add...)
		}
	}
	if e.Deliveries > e.Msg.Attempt {
		t.redelivered.Add(ctx, 1, mo.add...)
	}
	switch e.Outcome.Action {
	case broker.Retry:
		t.retries.Add(ctx, 1, mo.add...)
	case broker.DeadLetter:
		if e.SettleErr == nil {
			t.deadLettered.Add(ctx, 1, mo.add...)
		}
	case broker.Drop:
		t.dropped.Add(ctx, 1, mo.add...)
	case broker.Release:
		t.released.Add(ctx, 1, mo.add...)
	}
}

// handler wraps a channel's composed handler: the running gauge and, with
// tracing on, a consumer span whose parent is the trace context carried in
// the message headers (W3C traceparent), so sends from the handler are its
// children.
func (t *telemetry) handler(ch *broker.Channel, adapter string, next broker.Handler) broker.Handler {
	if !t.metrics && t.tracer == nil {
		return next
	}
	mo := channelMeasureOpts(ch, adapter)
	if t.tracer == nil {
		return func(ctx context.Context, m *broker.Message) error {
			t.active.Add(ctx, 1, mo.add...)
			defer t.active.Add(ctx, -1, mo.add...)
			return next(ctx, m)
		}
	}
	name := "process " + ch.Name
	spanAttrs := trace.WithAttributes(attribute.String("messaging.system", adapter),
		attribute.String("messaging.destination.name", ch.Name),
		attribute.String("messaging.consumer.group.name", ch.Group))
	return func(ctx context.Context, m *broker.Message) error {
		t.active.Add(ctx, 1, mo.add...)
		defer t.active.Add(ctx, -1, mo.add...)
		parent := t.prop.Extract(ctx, propagation.MapCarrier(m.Headers))
		msgAttrs := trace.WithAttributes(attribute.String("messaging.message.id", m.ID), attribute.Int("channels.attempt", m.Attempt))
		var span trace.Span
		if t.traceLinkOnly {
			// A trace of its own, linked to the producer's: the local
			// sampler decides, not the producer's sampled flag.
			var links []trace.Link
			if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
				links = []trace.Link{{SpanContext: sc}}
			}
			ctx, span = t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), spanAttrs, msgAttrs,
				trace.WithNewRoot(), trace.WithLinks(links...))
		} else {
			ctx, span = t.tracer.Start(parent, name, trace.WithSpanKind(trace.SpanKindConsumer), spanAttrs, msgAttrs)
		}
		defer span.End()
		err := callRecovered(next, ctx, m)
		if err != nil {
			spanError(span, err)
		}
		return err
	}
}

// WithTraceParentAsLink makes each consumer span the root of a trace of its
// own, linked to the producer's span, instead of its child. By default a
// consumer continues the trace context a message carries (W3C traceparent):
// whoever can publish to a channel chooses the trace id of the consumer's
// spans and, with the default parent-based samplers, whether they are
// sampled (a producer setting the sampled flag on every message makes every
// run recorded and exported). With this option the consumer's own sampler
// decides, and sends from the handler carry the new trace.
func WithTraceParentAsLink(on bool) Option {
	return func(o *options) error { o.traceLinkOnly = on; return nil }
}

// callRecovered runs a handler, its panic turned into a *broker.PanicError,
// so that the handler span records it.
func callRecovered(next broker.Handler, ctx context.Context, m *broker.Message) (err error) {
	defer recoverHandler(&err)
	return next(ctx, m)
}

// spanError records err on a span as span.RecordError does (an "exception"
// event with its type and message) and sets the error status, with
// credentials hidden from the message (broker.Redact): a span leaves the
// process, and a handler's or driver's error text may hold a URL with its
// password or a token.
func spanError(span trace.Span, err error) {
	msg := broker.Redact(err.Error())
	t := reflect.TypeOf(err)
	typ := t.String()
	if he, ok := err.(*handlerError); ok {
		typ = reflect.TypeOf(he.err).String()
	}
	span.AddEvent("exception", trace.WithAttributes(attribute.String("exception.type", typ), attribute.String("exception.message", msg)))
	span.SetStatus(codes.Error, msg)
}

// send wraps the innermost send: counts, and with tracing on a producer
// span whose context travels in the message headers (traceparent,
// tracestate). The span name, its destination and the metrics' channel
// attribute are the channel's full name, namespace included: the name the
// broker sees, as on the consumer side (OpenTelemetry's
// messaging.destination.name).
// With neither metrics nor tracing it is next itself.
func (t *telemetry) send(adapter, namespace string, next func(context.Context, string, any, ...broker.PublishOption) error) func(context.Context, string, any, ...broker.PublishOption) error {
	if !t.metrics && t.tracer == nil {
		return next
	}
	return func(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error {
		full := prefixed(namespace, channel)
		attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("channel", full), attribute.String("adapter", adapter)))
		if t.tracer != nil {
			var span trace.Span
			ctx, span = t.tracer.Start(ctx, "send "+full, trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithAttributes(attribute.String("messaging.system", adapter), attribute.String("messaging.destination.name", full)))
			defer span.End()
			carrier := propagation.MapCarrier{}
			t.prop.Inject(ctx, carrier)
			if len(carrier) > 0 {
				opts = append(opts[:len(opts):len(opts)], broker.WithHeaders(carrier))
			}
			err := next(ctx, channel, payload, opts...)
			if err != nil {
				spanError(span, err)
				t.sendErrors.Add(ctx, 1, attrs)
				return err
			}
			t.sent.Add(ctx, 1, attrs)
			return nil
		}
		if err := next(ctx, channel, payload, opts...); err != nil {
			t.sendErrors.Add(ctx, 1, attrs)
			return err
		}
		t.sent.Add(ctx, 1, attrs)
		return nil
	}
}

// sendBatch wraps the innermost batch send as send wraps the innermost
// send: every message is counted as sent or failed, and with tracing on has
// a producer span of its own (a child of ctx, ended with the message's
// outcome) whose context travels in that message's headers. Names are the
// channel's full name, as in send.
// With neither metrics nor tracing it is next itself.
func (t *telemetry) sendBatch(adapter, namespace string, next hooks.SendBatchFunc) hooks.SendBatchFunc {
	if !t.metrics && t.tracer == nil {
		return next
	}
	return func(ctx context.Context, channel string, items []hooks.BatchItem, opts ...broker.PublishOption) []error {
		full := prefixed(namespace, channel)
		attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("channel", full), attribute.String("adapter", adapter)))
		var spans []trace.Span
		if t.tracer != nil {
			items = slices.Clone(items) // the caller's items are left as they are
			spans = make([]trace.Span, len(items))
			for i := range items {
				sctx, span := t.tracer.Start(ctx, "send "+full, trace.WithSpanKind(trace.SpanKindProducer),
					trace.WithAttributes(attribute.String("messaging.system", adapter), attribute.String("messaging.destination.name", full),
						attribute.Int("messaging.batch.message_count", len(items))))
				spans[i] = span
				carrier := propagation.MapCarrier{}
				t.prop.Inject(sctx, carrier)
				if len(carrier) > 0 {
					o := items[i].Options
					items[i].Options = append(o[:len(o):len(o)], broker.WithHeaders(carrier))
				}
			}
		}
		errs := next(ctx, channel, items, opts...)
		failed := 0
		for i := range items {
			var err error
			if errs != nil {
				err = errs[i]
			}
			if err != nil {
				failed++
			}
			if spans != nil {
				if err != nil {
					spanError(spans[i], err)
				}
				spans[i].End()
			}
		}
		if failed > 0 {
			t.sendErrors.Add(ctx, int64(failed), attrs)
		}
		if sent := len(items) - failed; sent > 0 {
			t.sent.Add(ctx, int64(sent), attrs)
		}
		return errs
	}
}

// watchLag registers the lag and pending gauges for the subscribed channels
// of an adapter that reports them (broker.LagReporter).
func (t *telemetry) watchLag(mp metric.MeterProvider, a broker.Adapter, chs []*broker.Channel) error {
	lr, ok := a.(broker.LagReporter)
	if !ok || mp == nil {
		return nil
	}
	t.mu.Lock()
	for _, ch := range chs {
		t.lagged[ch] = channelAttrs(ch, a.Name())
	}
	t.mu.Unlock()
	if t.lagReg != nil {
		return nil
	}
	m := mp.Meter(instrumentationName)
	lag, err := m.Int64ObservableGauge(MetricLag, metric.WithDescription("Entries not yet delivered to the group."),
		metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	pending, err := m.Int64ObservableGauge(MetricPending, metric.WithDescription("Entries delivered and not yet acknowledged."),
		metric.WithUnit("{message}"))
	if err != nil {
		return err
	}
	t.lagReg, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, lagTimeout)
		defer cancel()
		t.mu.Lock()
		chs := make(map[*broker.Channel]metric.MeasurementOption, len(t.lagged))
		for ch, a := range t.lagged {
			chs[ch] = a
		}
		t.mu.Unlock()
		for ch, attrs := range chs {
			st, err := lr.Lag(ctx, ch.Name, ch.Group)
			if err != nil {
				continue
			}
			if st.Lag >= 0 {
				o.ObserveInt64(lag, st.Lag, attrs)
			}
			o.ObserveInt64(pending, st.Pending, attrs)
		}
		return nil
	}, lag, pending)
	return err
}

// forget stops reporting the lag of chs.
func (t *telemetry) forget(chs []*broker.Channel) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ch := range chs {
		delete(t.lagged, ch)
	}
}

// lagTimeout bounds one collection of the lag gauges.
const lagTimeout = 2 * time.Second
