package channels_test

// Trust boundaries (issue 26): what a producer may put in a consumer's
// context, and what a send takes out of the process.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go-micro.dev/v4/metadata"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"

	_ "github.com/microchannels/channels/amqp"
	_ "github.com/microchannels/channels/jetstream"
	_ "github.com/microchannels/channels/kafka"
	_ "github.com/microchannels/channels/redis"
)

// seen is what a handler saw of one delivery.
type seen struct {
	meta    map[string]any    // CallInfo.Meta
	md      metadata.Metadata // go-micro metadata of its ctx
	hasMD   bool
	level   int
	wire    map[string]any // the $meta header as sent, decoded
	headers map[string]string
}

// trustRig is a started plugin whose channel "in" records what it sees
// into got; fwd, when set, runs in the handler after recording.
type trustRig struct {
	p   *channels.Plugin
	s   *svc
	got chan seen
	bus *memory.Bus
}

// producer is a plugin of its own on the rig's bus, without tracing: what
// it sends is what any producer may send.
func (r *trustRig) producer(t *testing.T) *svc {
	t.Helper()
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(r.bus))))
	if err != nil {
		t.Fatal(err)
	}
	s := &svc{Name: "producer"}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return s
}

func newTrustRig(t *testing.T, fwd func(ctx context.Context, s *svc) error, opts ...channels.Option) *trustRig {
	t.Helper()
	r := &trustRig{got: make(chan seen, 8), bus: memory.NewBus()}
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(memory.New(memory.WithBus(r.bus))),
		channels.WithMaxRetries(channels.NoRetries)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	record := func(ctx context.Context, m *channels.Message) {
		var h seen
		ci, _ := channels.FromContext(ctx)
		h.meta, h.level, h.headers = ci.Meta, ci.Level, m.Headers
		h.md, h.hasMD = metadata.FromContext(ctx)
		if raw, err := base64.StdEncoding.DecodeString(m.Headers[broker.HeaderMeta]); err == nil && len(raw) > 0 {
			_ = json.Unmarshal(raw, &h.wire)
		}
		r.got <- h
	}
	r.s = &svc{Name: "trust", Channels: channels.Channels{
		"in": channels.On(func(ctx context.Context, m *channels.Message) error {
			record(ctx, m)
			if fwd != nil {
				return fwd(ctx, r.s)
			}
			return nil
		}),
		"out": channels.On(func(ctx context.Context, m *channels.Message) error { record(ctx, m); return nil }),
	}}
	if err := p.Register(r.s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	r.p = p
	return r
}

func (r *trustRig) next(t *testing.T) seen {
	t.Helper()
	select {
	case h := <-r.got:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
		return seen{}
	}
}

// hostileMeta is what a producer that may only publish to the channel
// puts in $meta: go-micro's own headers, in any case, and two ordinary
// entries (those a Node peer of the interop suite sends).
const hostileMeta = `{"authorization":"Bearer ATTACKER","Micro-Namespace":"admin","MICRO-FROM-SERVICE":"root",` +
	`"remote":"10.0.0.1:1","Local":"x","timeout":"1ns","Content-Type":"application/grpc","accept":"x","tenant":"acme","n":5}`

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestMetaInboundDenied: go-micro's Authorization, Micro-*, Remote, Local,
// Timeout, Content-Type and Accept of a received $meta reach neither the
// handler's go-micro metadata (which go-micro's client forwards on every
// call) nor CallInfo.Meta; the other entries arrive as before.
func TestMetaInboundDenied(t *testing.T) {
	r := newTrustRig(t, nil)
	if err := r.s.SendToChannel(context.Background(), "in", 1, broker.WithHeader(broker.HeaderMeta, b64(hostileMeta))); err != nil {
		t.Fatal(err)
	}
	h := r.next(t)
	if want := map[string]any{"tenant": "acme", "n": 5.0}; !reflect.DeepEqual(h.meta, want) {
		t.Errorf("CallInfo.Meta = %v, want %v", h.meta, want)
	}
	if want := (metadata.Metadata{"Tenant": "acme", "N": "5"}); !reflect.DeepEqual(h.md, want) {
		t.Errorf("go-micro metadata = %v, want %v", h.md, want)
	}
}

// TestMetaOutboundDenied: a request handler's ctx carries the caller's
// bearer token and go-micro's Micro-* and Remote entries; a send with it
// stores none of them in the broker, only the ordinary entries.
func TestMetaOutboundDenied(t *testing.T) {
	r := newTrustRig(t, nil)
	ctx := metadata.NewContext(context.Background(), metadata.Metadata{
		"Authorization": "Bearer CALLER", "Micro-From-Service": "gateway", "Micro-Namespace": "go.micro",
		"Remote": "10.0.0.2:5555", "Local": "10.0.0.3:1", "Timeout": "5s", "Content-Type": "application/json",
		"Accept": "application/json", "Tenant": "acme"})
	if err := r.s.SendToChannel(ctx, "in", 1); err != nil {
		t.Fatal(err)
	}
	h := r.next(t)
	if want := map[string]any{"Tenant": "acme"}; !reflect.DeepEqual(h.wire, want) {
		t.Errorf("$meta on the wire = %v, want %v", h.wire, want)
	}
}

// TestMetaAllowAndForward: a handler forwards with its ctx: a WithMetaAllow
// consumer lets Authorization into its own context, but sends never take
// a denied key from the received $meta either, unless allowed.
func TestMetaAllowAndForward(t *testing.T) {
	fwd := func(ctx context.Context, s *svc) error { return s.SendToChannel(ctx, "out", 1) }
	r := newTrustRig(t, fwd, channels.WithMetaAllow("AUTHORIZATION"), channels.WithMetaDeny("tenant"))
	if err := r.s.SendToChannel(context.Background(), "in", 1, broker.WithHeader(broker.HeaderMeta, b64(hostileMeta))); err != nil {
		t.Fatal(err)
	}
	h := r.next(t)
	if want := map[string]any{"authorization": "Bearer ATTACKER", "n": 5.0}; !reflect.DeepEqual(h.meta, want) {
		t.Errorf("CallInfo.Meta = %v, want %v", h.meta, want)
	}
	out := r.next(t)
	if want := map[string]any{"authorization": "Bearer ATTACKER", "n": 5.0}; !reflect.DeepEqual(out.wire, want) {
		t.Errorf("forwarded $meta = %v, want %v", out.wire, want)
	}
}

// TestMetaPropagationOff: the received $meta stays readable in CallInfo.Meta
// but is not go-micro metadata, and a forward carries only WithMeta entries.
func TestMetaPropagationOff(t *testing.T) {
	fwd := func(ctx context.Context, s *svc) error {
		ctx = metadata.Set(ctx, "Tenant", "other")
		return s.SendToChannel(channels.WithMeta(ctx, map[string]any{"explicit": true}), "out", 1)
	}
	r := newTrustRig(t, fwd, channels.WithMetaPropagation(false))
	if err := r.s.SendToChannel(context.Background(), "in", 1, broker.WithHeader(broker.HeaderMeta, b64(hostileMeta))); err != nil {
		t.Fatal(err)
	}
	h := r.next(t)
	if want := map[string]any{"tenant": "acme", "n": 5.0}; !reflect.DeepEqual(h.meta, want) || h.hasMD {
		t.Errorf("CallInfo.Meta = %v (want %v), go-micro metadata %v", h.meta, want, h.md)
	}
	out := r.next(t)
	if want := map[string]any{"explicit": true}; !reflect.DeepEqual(out.wire, want) {
		t.Errorf("forwarded $meta = %v, want %v", out.wire, want)
	}
}

func TestMetaOptionsValidate(t *testing.T) {
	mem := channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus())))
	for _, o := range []channels.Option{channels.WithMetaAllow(""), channels.WithMetaDeny("a*b"),
		channels.WithMaxPayloadSize(0), channels.WithMaxMetaSize(-1)} {
		if _, err := channels.New(mem, o); !errors.Is(err, channels.ErrInvalidOption) {
			t.Errorf("option accepted: %v", err)
		}
	}
}

// TestLevelClamped: a producer's $level cannot wrap the consumer's Level
// around or make it negative.
func TestLevelClamped(t *testing.T) {
	r := newTrustRig(t, nil)
	for _, lv := range []string{"9223372036854775807", "-5", "-9223372036854775808"} {
		if err := r.s.SendToChannel(context.Background(), "in", 1, broker.WithHeader(broker.HeaderLevel, lv)); err != nil {
			t.Fatal(err)
		}
		if h := r.next(t); h.level < 1 {
			t.Errorf("$level %s: Level %d", lv, h.level)
		}
	}
}

// TestMaxPayloadAndMetaSize: a producer with large limits and a consumer
// with the defaults on one bus: the consumer refuses (dead-letters, without
// running the handler) payloads over MaxPayloadSize, $meta over MaxMetaSize
// or with more than MaxMetaEntries entries; its own sends over the limits
// fail at once.
func TestMaxPayloadAndMetaSize(t *testing.T) {
	bus := memory.NewBus()
	big := strings.Repeat("x", channels.DefaultMaxPayloadSize)
	prod, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))),
		channels.WithMaxPayloadSize(4<<20), channels.WithMaxMetaSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(bus))))
	if err != nil {
		t.Fatal(err)
	}
	var ran, dead atomic.Int32
	var cause atomic.Value
	// The dead letters hold what the consumer refused: the producer, with
	// its limits, reads them.
	ps := &svc{Name: "producer", Channels: channels.Channels{
		"FAILED_MESSAGES": channels.On(func(_ context.Context, m *channels.Message) error {
			cause.Store(m.Headers[broker.HeaderErrorMessage])
			dead.Add(1)
			return nil
		}),
	}}
	cs := &svc{Name: "consumer", Channels: channels.Channels{
		"c": {DeadLettering: &channels.DeadLettering{Enabled: true}, Handler: func(context.Context, *channels.Message) error { ran.Add(1); return nil }},
	}}
	for _, x := range []struct {
		p *channels.Plugin
		s *svc
	}{{prod, ps}, {cons, cs}} {
		if err := x.p.Register(x.s); err != nil {
			t.Fatal(err)
		}
		if err := x.p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer x.p.Stop(context.Background())
	}
	// The consumer's own sends are refused at once.
	if err := cs.SendToChannel(context.Background(), "c", big); !errors.Is(err, broker.ErrTooLarge) || !errors.Is(err, channels.ErrEncode) {
		t.Fatalf("send over MaxPayloadSize: %v", err)
	}
	bigMeta := channels.WithMeta(context.Background(), map[string]any{"k": strings.Repeat("m", channels.DefaultMaxMetaSize)})
	if err := cs.SendToChannel(bigMeta, "c", 1); !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("send over MaxMetaSize: %v", err)
	}
	// What a producer with larger limits sends is poison to the consumer.
	if err := ps.SendToChannel(context.Background(), "c", big); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return dead.Load() == 1 })
	if c, _ := cause.Load().(string); !strings.Contains(c, "MaxPayloadSize") {
		t.Errorf("x-error-message %q", c)
	}
	if err := ps.SendToChannel(bigMeta, "c", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return dead.Load() == 2 })
	// Too many $meta entries, within the size.
	many := map[string]any{}
	for i := range channels.MaxMetaEntries + 1 {
		many[strings.Repeat("k", 1+i%7)+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676))] = 0
	}
	if err := ps.SendToChannel(channels.WithMeta(context.Background(), many), "c", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return dead.Load() == 3 })
	if c, _ := cause.Load().(string); !strings.Contains(c, "1024") {
		t.Errorf("x-error-message %q", c)
	}
	if ran.Load() != 0 {
		t.Fatalf("the handler ran %d times", ran.Load())
	}
	if err := ps.SendToChannel(context.Background(), "c", 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return ran.Load() == 1 })
}

// secretErr is a handler error whose text quotes a driver's URL with its
// password and a token.
var secretErr = errors.New(`dial "amqp://app:Hunter2@10.0.0.1:5672": refused; retry with {"password":"Hunter2"}, Authorization: Bearer Hunter2tok`)

// TestHandlerErrorRedacted (issue 26 item 7): a handler's error text and
// the stack of its panic go into dead-letter headers and span status with
// their credentials hidden.
func TestHandlerErrorRedacted(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))),
		channels.WithMaxRetries(channels.NoRetries), channels.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	dead := make(chan map[string]string, 2)
	dl := &channels.DeadLettering{Enabled: true}
	s := &svc{Name: "redact", Channels: channels.Channels{
		"fails":  {DeadLettering: dl, Handler: func(context.Context, *channels.Message) error { return secretErr }},
		"panics": {DeadLettering: dl, Handler: func(context.Context, *channels.Message) error { panic(secretErr.Error()) }},
		"FAILED_MESSAGES": channels.On(func(_ context.Context, m *channels.Message) error {
			dead <- m.Headers
			return nil
		}),
	}}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	for _, ch := range []string{"fails", "panics"} {
		if err := s.SendToChannel(context.Background(), ch, 1); err != nil {
			t.Fatal(err)
		}
		var h map[string]string
		select {
		case h = <-dead:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no dead letter", ch)
		}
		stack, _ := base64.StdEncoding.DecodeString(h[broker.HeaderErrorStack])
		for k, v := range map[string]string{"x-error-message": h[broker.HeaderErrorMessage], "x-error-stack": string(stack)} {
			if strings.Contains(v, "Hunter2") || !strings.Contains(v, "10.0.0.1:5672") {
				t.Errorf("%s: %s = %q", ch, k, v)
			}
		}
		if ch == "panics" && (!strings.Contains(string(stack), "goroutine") || h[broker.HeaderErrorName] != "PanicError") {
			t.Errorf("panic: x-error-name %q, x-error-stack %q", h[broker.HeaderErrorName], stack)
		}
	}
	eventually(t, func() bool { return len(spans.Ended()) >= 6 })
	failed := 0
	for _, sp := range spans.Ended() {
		if sp.Status().Code != codes.Error {
			continue
		}
		failed++
		if strings.Contains(sp.Status().Description, "Hunter2") {
			t.Errorf("span %s status: %q", sp.Name(), sp.Status().Description)
		}
		for _, ev := range sp.Events() {
			for _, a := range ev.Attributes {
				if strings.Contains(a.Value.Emit(), "Hunter2") {
					t.Errorf("span %s event %s: %s=%q", sp.Name(), ev.Name, a.Key, a.Value.Emit())
				}
			}
		}
	}
	if failed < 2 {
		t.Errorf("%d spans with an error status, want the 2 failed runs (the panic too)", failed)
	}
}

// TestTraceParentAsLink (issue 26 item 7): by default a producer's sampled
// traceparent makes a parent-based sampler record the consumer's run;
// WithTraceParentAsLink gives the run a trace of its own, linked to the
// producer's, sampled by the consumer's sampler alone.
func TestTraceParentAsLink(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	forced := "00-" + traceID + "-00f067aa0ba902b7-01"
	for _, asLink := range []bool{false, true} {
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
		r := newTrustRig(t, nil, channels.WithTracerProvider(tp), channels.WithTraceParentAsLink(asLink))
		if err := r.producer(t).SendToChannel(context.Background(), "in", 1, broker.WithHeader("traceparent", forced)); err != nil {
			t.Fatal(err)
		}
		r.next(t)
		time.Sleep(20 * time.Millisecond)
		var consumer []sdktrace.ReadOnlySpan
		for _, sp := range spans.Ended() {
			if sp.SpanKind() == oteltrace.SpanKindConsumer {
				consumer = append(consumer, sp)
			}
		}
		switch {
		case !asLink && (len(consumer) != 1 || consumer[0].SpanContext().TraceID().String() != traceID):
			t.Errorf("default: %d consumer spans recorded, want 1 in the producer's trace", len(consumer))
		case asLink && len(consumer) != 0:
			t.Errorf("as link: the producer's sampled flag still made the consumer span recorded (%d)", len(consumer))
		}
		_ = tp.Shutdown(context.Background())
	}
	// With a sampler that records, the run is linked to the producer.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	r := newTrustRig(t, nil, channels.WithTracerProvider(tp), channels.WithTraceParentAsLink(true))
	if err := r.producer(t).SendToChannel(context.Background(), "in", 1, broker.WithHeader("traceparent", forced)); err != nil {
		t.Fatal(err)
	}
	r.next(t)
	eventually(t, func() bool {
		for _, sp := range spans.Ended() {
			if sp.SpanKind() == oteltrace.SpanKindConsumer {
				return sp.SpanContext().TraceID().String() != traceID && !sp.Parent().IsValid() &&
					len(sp.Links()) == 1 && sp.Links()[0].SpanContext.TraceID().String() == traceID
			}
		}
		return false
	})
}

// TestPluginPrintHidesPassword (issue 26 item 6): %v of a plugin printed
// its options, the adapter URL with its password among them.
func TestPluginPrintHidesPassword(t *testing.T) {
	for _, raw := range []string{"redis://user:Hunter2@127.0.0.1:6379", "nats://user:Hunter2@127.0.0.1:4222,nats://u:Hunter2@h:1",
		"kafka://user:Hunter2@127.0.0.1:9092", "amqp://user:Hunter2@127.0.0.1:5672"} {
		p, err := channels.New(channels.WithAdapter(raw))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
			if s := fmt.Sprintf(f, p); strings.Contains(s, "Hunter2") {
				t.Errorf("%s of the plugin of %s: %s", f, raw, s)
			}
		}
	}
}
