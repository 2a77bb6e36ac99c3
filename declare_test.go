package channels_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
	"github.com/microchannels/channels/kafka"
	"github.com/microchannels/channels/memory"
	"github.com/microchannels/channels/redis"
)

// TestDeclarationErrorsAtRegister: what Start would refuse in a channel
// declaration is reported by Register, before any connection: MaxDeliveries
// below MaxRetries+1, an option of another adapter's package, a bad
// adapter option value, a group name no broker takes.
func TestDeclarationErrorsAtRegister(t *testing.T) {
	noop := func(context.Context, *channels.Message) error { return nil }
	rds, err := redis.New("redis://127.0.0.1:1") // never connected
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New(memory.WithBus(memory.NewBus()))
	tests := []struct {
		name    string
		adapter broker.Adapter
		ch      channels.Channel
		want    string // in the message
	}{
		{"MaxDeliveries below MaxRetries+1", mem, channels.Channel{MaxRetries: 3, MaxDeliveries: 2, Handler: noop}, "MaxDeliveries (2)"},
		{"MaxDeliveries below the plugin's MaxRetries+1", mem, channels.Channel{MaxDeliveries: 1, Handler: noop}, "MaxDeliveries (1)"},
		{"a kafka option on redis", rds, channels.Channel{Handler: noop, AdapterOptions: []any{kafka.ChannelOptions{FromBeginning: true}}}, "kafka.ChannelOptions"},
		{"a redis option on memory", mem, channels.Channel{Handler: noop, AdapterOptions: []any{redis.ChannelOptions{}}}, "redis.ChannelOptions"},
		{"a bad redis option value", rds, channels.Channel{Handler: noop, AdapterOptions: []any{redis.ChannelOptions{ReadTimeout: -1}}}, "redis"},
		{"a group with a space", mem, channels.Channel{Group: "my group", Handler: noop}, "group"},
		{"a group with a wildcard", mem, channels.Channel{Group: "g.*", Handler: noop}, "group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := channels.New(channels.WithAdapter(tt.adapter), channels.WithMaxRetries(2))
			if err != nil {
				t.Fatal(err)
			}
			err = p.Register(&svc{Name: "s", Channels: channels.Channels{"c": tt.ch}})
			if !errors.Is(err, channels.ErrInvalidOption) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Register = %v, want ErrInvalidOption saying %q", err, tt.want)
			}
		})
	}
	t.Run("a service name no broker takes", func(t *testing.T) {
		p, err := channels.New(channels.WithAdapter(mem), channels.WithService("my service", ""))
		if err != nil {
			t.Fatal(err)
		}
		err = p.Register(&struct{ Channels channels.Channels }{channels.Channels{"c": {Handler: noop}}})
		if !errors.Is(err, channels.ErrInvalidOption) || !strings.Contains(err.Error(), "group") {
			t.Fatalf("Register = %v, want ErrInvalidOption on the group", err)
		}
	})
	t.Run("valid declarations register", func(t *testing.T) {
		p, err := channels.New(channels.WithAdapter(rds))
		if err != nil {
			t.Fatal(err)
		}
		err = p.Register(&svc{Name: "s", Channels: channels.Channels{"c": {Group: "v2.payments-1_x", MaxRetries: 2, MaxDeliveries: 3,
			Handler: noop, AdapterOptions: []any{redis.ChannelOptions{StartID: "0"}}}}})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestStartPositionDeclarations: a portable start position is checked at
// Register against the adapter: refused where the broker cannot honour it
// (*UnsupportedError), refused when the channel's own adapter option says
// otherwise (*ConflictError), accepted when they agree.
func TestStartPositionDeclarations(t *testing.T) {
	noop := func(context.Context, *channels.Message) error { return nil }
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	must := func(a broker.Adapter, err error) broker.Adapter {
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	rds := must(redis.New("redis://127.0.0.1:1"))
	kfk := must(kafka.New("kafka://127.0.0.1:1"))
	nts := must(jetstream.New("nats://127.0.0.1:1"))
	rmq := must(amqp.New("amqp://guest:guest@127.0.0.1:1/"))
	tests := []struct {
		name    string
		adapter broker.Adapter
		start   channels.StartPosition
		opts    []any
		want    any // nil, **UnsupportedError or **ConflictError
	}{
		{"amqp oldest", rmq, channels.StartOldest, nil, new(*channels.UnsupportedError)},
		{"amqp at", rmq, channels.StartAt(at), nil, new(*channels.UnsupportedError)},
		{"amqp newest", rmq, channels.StartNewest, nil, nil},
		{"redis StartID against oldest", rds, channels.StartOldest, []any{redis.ChannelOptions{StartID: "$"}}, new(*channels.ConflictError)},
		{"redis StartID agreeing", rds, channels.StartOldest, []any{redis.ChannelOptions{StartID: "0"}}, nil},
		{"kafka FromBeginning against newest", kfk, channels.StartNewest, []any{kafka.ChannelOptions{FromBeginning: true}}, new(*channels.ConflictError)},
		{"kafka FromBeginning agreeing", kfk, channels.StartOldest, []any{kafka.ChannelOptions{FromBeginning: true}}, nil},
		{"jetstream DeliverPolicy against a time", nts, channels.StartAt(at), []any{jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverAll}}, new(*channels.ConflictError)},
		{"jetstream another time", nts, channels.StartAt(at), []any{jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverByStartTime, StartTime: at.Add(time.Second)}}, new(*channels.ConflictError)},
		{"jetstream agreeing", nts, channels.StartAt(at), []any{jetstream.ChannelOptions{DeliverPolicy: jetstream.DeliverByStartTime, StartTime: at}}, nil},
		{"a time without a time", rds, channels.StartPosition{From: broker.FromTime}, nil, new(error)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := channels.New(channels.WithAdapter(tt.adapter))
			if err != nil {
				t.Fatal(err)
			}
			err = p.Register(&svc{Name: "s", Channels: channels.Channels{"c": {Start: tt.start, Handler: noop, AdapterOptions: tt.opts}}})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Register = %v", err)
				}
				return
			}
			if !errors.Is(err, channels.ErrInvalidOption) || !errors.As(err, tt.want) {
				t.Fatalf("Register = %v, want %T", err, tt.want)
			}
			if _, unsupported := tt.want.(**channels.UnsupportedError); unsupported && !errors.Is(err, channels.ErrUnsupported) {
				t.Fatalf("Register = %v, want it to wrap ErrUnsupported", err)
			}
		})
	}
}
