package channels_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

type typoSchema struct {
	Name          string
	Channels      channels.Channels
	SendToChannel channels.SendFunc
}

// TestNameOptionsMustMatchFields: a name option that matches no field of a
// schema declaring channels is an error naming the option and the field it
// looked for, never a silent nil field.
func TestNameOptionsMustMatchFields(t *testing.T) {
	noop := channels.On(func(context.Context, *channels.Message) error { return nil })
	declaring := func() any { return &typoSchema{Name: "s", Channels: channels.Channels{"c": noop}} }
	tests := []struct {
		name    string
		opt     channels.Option
		schema  func() any
		wantErr error
		want    []string // in the message
	}{
		{"schema property typo", channels.WithSchemaProperty("Chanels"), declaring, channels.ErrInvalidOption,
			[]string{"WithSchemaProperty", "Chanels", "[Channels]"}},
		{"send method typo", channels.WithSendMethodName("SendToChanel"), declaring, channels.ErrInvalidOption,
			[]string{"WithSendMethodName", "SendToChanel", "[SendToChannel]"}},
		{"adapter property missing", channels.WithAdapterPropertyName("Adapter"), declaring, channels.ErrInvalidOption,
			[]string{"WithAdapterPropertyName", "Adapter"}},
		{"trigger missing", channels.WithChannelHandlerTrigger("Emit"), declaring, channels.ErrInvalidOption,
			[]string{"WithChannelHandlerTrigger", "Emit"}},
		{"a schema without channels needs no field", channels.WithSendMethodName("SendToAudit"),
			func() any { return &typoSchema{Name: "s"} }, nil, nil},
		{"the defaults are optional", nil, func() any {
			return &struct {
				Name     string
				Channels channels.Channels
			}{"s", channels.Channels{"c": noop}}
		}, nil, nil},
		{"an explicit name that exists", channels.WithSendMethodName("SendToChannel"), declaring, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))), tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Register(tt.schema())
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Register = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("the error does not say %q: %v", w, err)
				}
			}
		})
	}
}

// TestMisspelledInjectedFields: a field of an injected type whose name is a
// near miss of the name the plugin looks for would stay nil; Register
// reports it as it reports a misspelled Channels field, with or without
// channels declared. Fields of those types with unrelated names belong to
// other plugins and are left alone.
func TestMisspelledInjectedFields(t *testing.T) {
	noop := channels.On(func(context.Context, *channels.Message) error { return nil })
	tests := []struct {
		name   string
		schema any
		want   []string // in the message; none: Register succeeds
	}{
		{"send", &struct {
			Name         string
			Channels     channels.Channels
			SendToChanel channels.SendFunc
		}{Name: "s", Channels: channels.Channels{"c": noop}}, []string{"WithSendMethodName", "SendToChanel", "did you mean"}},
		{"send, no channels", &struct {
			Name         string
			SendToChanel channels.SendFunc
		}{Name: "s"}, []string{"SendToChanel"}},
		{"send, case", &struct {
			Name          string
			SendtoChannel channels.SendFunc
		}{Name: "s"}, []string{"SendtoChannel"}},
		{"adapter", &struct {
			Name          string
			ChanelAdapter broker.Adapter
		}{Name: "s"}, []string{"WithAdapterPropertyName", "ChanelAdapter"}},
		{"trigger", &struct {
			Name                   string
			EmitLocalChanelHandler channels.TriggerFunc
		}{Name: "s"}, []string{"WithChannelHandlerTrigger", "EmitLocalChanelHandler"}},
		{"another plugin's fields", &struct {
			Name             string
			SendToAudit      channels.SendFunc
			EmitLocalChannel channels.TriggerFunc
		}{Name: "s"}, nil},
		{"the right name next to a near one", &struct {
			Name          string
			SendToChannel channels.SendFunc
			SendToChanel  channels.SendFunc
		}{Name: "s"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
			if err != nil {
				t.Fatal(err)
			}
			err = p.Register(tt.schema)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Register = %v", err)
				}
				return
			}
			if !errors.Is(err, channels.ErrInvalidOption) {
				t.Fatalf("Register = %v, want ErrInvalidOption", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("the error does not say %q: %v", w, err)
				}
			}
		})
	}
}

// TestNames: namespaces and channel, dead-letter queue and exchange names
// must be usable on every broker (Redis stream, AMQP exchange, NATS
// subject, Kafka topic).
func TestNames(t *testing.T) {
	noop := func(context.Context, *channels.Message) error { return nil }
	mem := channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus())))
	for _, ns := range []string{"a b", "ns.", ".ns", "a..b", "n*", "n>", "ns/x", "ns:x", "é", strings.Repeat("n", 250)} {
		if _, err := channels.New(mem, channels.WithNamespace(ns)); !errors.Is(err, channels.ErrInvalidOption) {
			t.Errorf("WithNamespace(%q) = %v, want ErrInvalidOption", ns, err)
		}
	}
	if _, err := channels.New(mem, channels.WithDeadLettering(channels.DeadLettering{QueueName: "FAILED MESSAGES"})); !errors.Is(err, channels.ErrInvalidOption) {
		t.Errorf("WithDeadLettering with a space: %v", err)
	}
	for _, ok := range []string{"", "A", "my-app_1.v2"} {
		if _, err := channels.New(mem, channels.WithNamespace(ok)); err != nil {
			t.Errorf("WithNamespace(%q) = %v", ok, err)
		}
	}
	for _, tt := range []struct {
		name string
		ch   channels.Channels
	}{
		{"key with a space", channels.Channels{"order created": {Handler: noop}}},
		{"key with a wildcard", channels.Channels{"order.*": {Handler: noop}}},
		{"key with an empty token", channels.Channels{"order..created": {Handler: noop}}},
		{"Name with a slash", channels.Channels{"k": {Name: "orders/created", Handler: noop}}},
		{"dead-letter queue with a colon", channels.Channels{"k": {Handler: noop, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "dlq:x"}}}},
		{"too long", channels.Channels{strings.Repeat("x", 250): {Handler: noop}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := channels.New(mem)
			if err := p.Register(&svc{Name: "s", Channels: tt.ch}); !errors.Is(err, channels.ErrInvalidOption) {
				t.Fatalf("Register = %v, want ErrInvalidOption", err)
			}
		})
	}
	p, _ := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))), channels.WithNamespace("ns"))
	s := &svc{Name: "s", Channels: channels.Channels{"order.created": {Handler: noop,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "FAILED_MESSAGES"}}}}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	for _, bad := range []string{"", "a b", "a.", "a>b"} {
		if err := s.SendToChannel(context.Background(), bad, 1); !errors.Is(err, channels.ErrInvalidOption) {
			t.Errorf("send to %q = %v, want ErrInvalidOption", bad, err)
		}
	}
	if err := s.SendToChannel(context.Background(), "order.created", 1, broker.WithHeader("k", "v")); err != nil {
		t.Fatal(err)
	}
}

func TestQualifiedName(t *testing.T) {
	for _, c := range []struct{ ns, name, want string }{
		{"", "orders", "orders"},
		{"ns", "FAILED_MESSAGES", "ns.FAILED_MESSAGES"},
		{"a.b", "c.d", "a.b.c.d"},
	} {
		if got, err := channels.QualifiedName(c.ns, c.name); err != nil || got != c.want {
			t.Errorf("QualifiedName(%q, %q) = %q, %v; want %q", c.ns, c.name, got, err, c.want)
		}
	}
	for _, c := range [][2]string{{"bad ns", "x"}, {"ns", ""}, {"ns", "a..b"}, {"", "a*"}} {
		if _, err := channels.QualifiedName(c[0], c[1]); !errors.Is(err, channels.ErrInvalidOption) {
			t.Errorf("QualifiedName(%q, %q): %v, want ErrInvalidOption", c[0], c[1], err)
		}
	}
}
