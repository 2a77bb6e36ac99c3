package channels_test

import (
	"context"
	"errors"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

func TestNewOptionErrors(t *testing.T) {
	mem := channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus())))
	tests := []struct {
		name    string
		opts    []channels.Option
		wantErr error
	}{
		{"no adapter", nil, channels.ErrInvalidOption},
		{"empty adapter", []channels.Option{channels.WithAdapter("")}, channels.ErrInvalidOption},
		{"adapter of a wrong type", []channels.Option{channels.WithAdapter(42)}, channels.ErrInvalidOption},
		{"unknown type name", []channels.Option{channels.WithAdapter("Pigeon")}, channels.ErrUnknownAdapter},
		{"unknown scheme", []channels.Option{channels.WithAdapter("pigeon://coop")}, channels.ErrUnknownAdapter},
		{"MaxInFlight 0", []channels.Option{mem, channels.WithMaxInFlight(0)}, channels.ErrInvalidOption},
		{"retries -2", []channels.Option{mem, channels.WithMaxRetries(-2)}, channels.ErrInvalidOption},
		{"retries 0", []channels.Option{mem, channels.WithMaxRetries(0)}, channels.ErrInvalidOption},
		{"NoRetries", []channels.Option{mem, channels.WithMaxRetries(channels.NoRetries)}, nil},
		{"property not a field name", []channels.Option{mem, channels.WithSchemaProperty("my channels")}, channels.ErrInvalidOption},
		{"property unexported", []channels.Option{mem, channels.WithSendMethodName("send")}, channels.ErrInvalidOption},
		{"bad namespace", []channels.Option{mem, channels.WithNamespace("a b")}, channels.ErrInvalidOption},
		{"nil backoff", []channels.Option{mem, channels.WithBackoff(nil)}, channels.ErrInvalidOption},
		{"nil serializer", []channels.Option{mem, channels.WithSerializer(nil)}, channels.ErrInvalidOption},
		{"nil logger", []channels.Option{mem, channels.WithLogger(nil)}, channels.ErrInvalidOption},
		{"empty property", []channels.Option{mem, channels.WithSchemaProperty("")}, channels.ErrInvalidOption},
		{"same name twice", []channels.Option{mem, channels.WithSendMethodName("Channels")}, channels.ErrInvalidOption},
		{"negative timeout", []channels.Option{mem, channels.WithTimeouts(-1, 0, 0)}, channels.ErrInvalidOption},
		{"empty interceptor", []channels.Option{mem, channels.WithInterceptors(channels.Interceptor{Name: "x"})}, channels.ErrInvalidOption},
		{"valid", []channels.Option{mem, channels.WithMaxInFlight(4), channels.WithNamespace("ns")}, nil},
		{"valid URL", []channels.Option{channels.WithAdapter("memory://")}, nil},
		{"valid type name", []channels.Option{channels.WithAdapter("memory")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := channels.New(tt.opts...)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

type badField struct {
	Name     string
	Channels map[string]channels.Channel
}

type badSend struct {
	Name          string
	Channels      channels.Channels
	SendToChannel func()
}

func TestRegisterSchemaErrors(t *testing.T) {
	noop := func(context.Context, *channels.Message) error { return nil }
	tests := []struct {
		name    string
		schema  any
		wantErr error
	}{
		{"not a pointer", svc{Name: "a"}, channels.ErrInvalidSchema},
		{"nil pointer", (*svc)(nil), channels.ErrInvalidSchema},
		{"not a struct", new(int), channels.ErrInvalidSchema},
		{"wrong channels type", &badField{Name: "a"}, channels.ErrInvalidSchema},
		{"wrong send type", &badSend{Name: "a"}, channels.ErrInvalidSchema},
		{"missing handler", &svc{Name: "a", Channels: channels.Channels{"x": {}}}, channels.ErrNoHandler},
		{"negative MaxInFlight", &svc{Name: "a", Channels: channels.Channels{"x": {Handler: noop, MaxInFlight: -1}}}, channels.ErrInvalidOption},
		{"bad MaxRetries", &svc{Name: "a", Channels: channels.Channels{"x": {Handler: noop, MaxRetries: -2}}}, channels.ErrInvalidOption},
		{"valid", &svc{Name: "a", Channels: channels.Channels{"x": channels.On(noop)}}, nil},
		{"no channels field is fine", &struct{ Name string }{"a"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
			if err != nil {
				t.Fatal(err)
			}
			err = p.Register(tt.schema)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	noop := func(context.Context, *channels.Message) error { return nil }
	ctx := context.Background()
	p, _ := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	// No service name anywhere.
	if err := p.Register(&struct{ Channels channels.Channels }{channels.Channels{"x": channels.On(noop)}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); !errors.Is(err, channels.ErrInvalidSchema) {
		t.Fatalf("start without a service name: %v", err)
	}

	p2, _ := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))), channels.WithService("svc", "2"))
	s := &svc{Channels: channels.Channels{"x": channels.On(noop)}}
	if err := p2.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p2.Register(s); !errors.Is(err, channels.ErrInvalidSchema) {
		t.Fatalf("registering a schema twice: %v", err)
	}
	if err := p2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p2.Start(ctx); !errors.Is(err, channels.ErrAlreadyStarted) {
		t.Fatalf("second start: %v", err)
	}

	if err := p2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFullName(t *testing.T) {
	for _, tt := range []struct{ name, version, want string }{
		{"payments", "", "payments"},
		{"payments", "latest", "payments"},
		{"payments", "2", "v2.payments"},
		{"payments", "v3", "v3.payments"},
		{"payments", "1.2.0", "1.2.0.payments"},
	} {
		if got := channels.FullName(tt.name, tt.version); got != tt.want {
			t.Errorf("FullName(%q, %q) = %q, want %q", tt.name, tt.version, got, tt.want)
		}
	}
}

func TestTrigger(t *testing.T) {
	var got []int
	s := &svc{Name: "helper", Channels: channels.Channels{
		"helper.sum": channels.On(channels.Typed(func(ctx context.Context, in struct{ A, B int }, m *channels.Message) error {
			ci, _ := channels.FromContext(ctx)
			if ci.Service != "helper" || m.Attempt != 1 {
				t.Errorf("call info %+v attempt %d", ci, m.Attempt)
			}
			got = append(got, in.A+in.B)
			return nil
		})),
	}}
	var intercepted int
	p, _ := channels.New(channels.WithAdapter("memory://trigger"), channels.WithChannelHandlerTrigger("EmitLocalChannelHandler"),
		channels.WithInterceptors(channels.Interceptor{Name: "count", LocalChannel: func(next broker.Handler, _ channels.Info) broker.Handler {
			return func(ctx context.Context, m *broker.Message) error { intercepted++; return next(ctx, m) }
		}}))
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	// No broker, not even started.
	if err := s.EmitLocalChannelHandler(context.Background(), "helper.sum", map[string]int{"A": 5, "B": 5}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 10 || intercepted != 1 {
		t.Fatalf("got %v, intercepted %d", got, intercepted)
	}
	if err := s.EmitLocalChannelHandler(context.Background(), "nope", 1); !errors.Is(err, channels.ErrUnknownChannel) {
		t.Fatalf("unknown channel: %v", err)
	}
}
