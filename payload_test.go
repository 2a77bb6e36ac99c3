package channels_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// TestBytePayloads: with the JSON serializer a []byte payload is sent as is
// when it is valid JSON, and refused with an EncodeError pointing to
// broker.WithRaw otherwise (never a base64 JSON string).
func TestBytePayloads(t *testing.T) {
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	s := &svc{Name: "bytes", Channels: channels.Channels{"c": channels.On(func(ctx context.Context, m *channels.Message) error {
		got <- string(m.Payload)
		return nil
	})}}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	for _, tt := range []struct {
		name    string
		payload any
		opts    []broker.PublishOption
		want    string
	}{
		{"JSON bytes", []byte(`{"a":1}`), nil, `{"a":1}`},
		{"json.RawMessage", json.RawMessage(`{"b":2}`), nil, `{"b":2}`},
		{"raw bytes", []byte{0xff, 0x00}, []broker.PublishOption{broker.WithRaw()}, "\xff\x00"},
		{"a string is a JSON string", "hi", nil, `"hi"`},
	} {
		if err := s.SendToChannel(context.Background(), "c", tt.payload, tt.opts...); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if m := <-got; m != tt.want {
			t.Fatalf("%s: payload %q, want %q", tt.name, m, tt.want)
		}
	}
	for _, send := range []func() error{
		func() error { return s.SendToChannel(context.Background(), "c", []byte("not json")) },
		func() error { return s.EmitLocalChannelHandler(context.Background(), "c", []byte{0xff}) },
	} {
		err := send()
		var ee *broker.EncodeError
		if !errors.Is(err, channels.ErrEncode) || !errors.As(err, &ee) || !strings.Contains(err.Error(), "WithRaw") {
			t.Fatalf("non-JSON []byte: %v, want an EncodeError naming WithRaw", err)
		}
	}
	select {
	case m := <-got:
		t.Fatalf("a refused payload was delivered: %q", m)
	default:
	}
}
