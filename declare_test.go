package channels_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
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
