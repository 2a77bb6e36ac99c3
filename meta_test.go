package channels_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"

	"go-micro.dev/v4/metadata"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// TestMetaKeysKeepSpelling: a Node peer sends $meta {"userId":5}; a Go
// handler adds go-micro metadata and forwards; the next hop (Go or Node)
// sees the sender's keys with their JSON types, and the go-micro entry once.
func TestMetaKeysKeepSpelling(t *testing.T) {
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		t.Fatal(err)
	}
	type hop struct {
		wire map[string]any // $meta as a Node peer decodes it
		meta map[string]any // CallInfo.Meta
		md   metadata.Metadata
	}
	got := make(chan hop, 2)
	record := func(ctx context.Context, m *channels.Message) hop {
		var h hop
		raw, _ := base64.StdEncoding.DecodeString(m.Headers[broker.HeaderMeta])
		_ = json.Unmarshal(raw, &h.wire)
		ci, _ := channels.FromContext(ctx)
		h.meta = ci.Meta
		h.md, _ = metadata.FromContext(ctx)
		return h
	}
	s := &svc{Name: "meta"}
	s.Channels = channels.Channels{
		"a": channels.On(func(ctx context.Context, m *channels.Message) error {
			got <- record(ctx, m)
			if v, _ := metadata.Get(ctx, "userId"); v != "5" {
				t.Errorf("go-micro metadata userId = %q", v)
			}
			ctx = metadata.Set(ctx, "Tenant", "t1")
			return s.SendToChannel(ctx, "b", 1)
		}),
		"b": channels.On(func(ctx context.Context, m *channels.Message) error {
			got <- record(ctx, m)
			// A third hop: nothing changed, nothing duplicated.
			if ci, _ := channels.FromContext(ctx); ci.Level < 3 {
				return s.SendToChannel(ctx, "b", 1)
			}
			return nil
		}),
	}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	node := base64.StdEncoding.EncodeToString([]byte(`{"userId":5}`))
	if err := s.SendToChannel(context.Background(), "a", 1, broker.WithHeader(broker.HeaderMeta, node)); err != nil {
		t.Fatal(err)
	}
	first := <-got
	if want := map[string]any{"userId": 5.0}; !reflect.DeepEqual(first.meta, want) {
		t.Fatalf("first hop meta = %v, want %v", first.meta, want)
	}
	want := map[string]any{"userId": 5.0, "Tenant": "t1"}
	for i := 2; i <= 3; i++ {
		h := <-got
		if !reflect.DeepEqual(h.wire, want) {
			t.Fatalf("hop %d: $meta on the wire = %v, want %v", i, h.wire, want)
		}
		if !reflect.DeepEqual(h.meta, want) {
			t.Fatalf("hop %d: CallInfo.Meta = %v, want %v", i, h.meta, want)
		}
		if v, _ := h.md.Get("userId"); v != "5" || h.md["Tenant"] != "t1" {
			t.Fatalf("hop %d: go-micro metadata = %v", i, h.md)
		}
	}
}

// TestMetaChangedThroughMetadata: a value changed with go-micro metadata
// replaces the $meta entry under the sender's spelling; WithMeta sets keys
// and types exactly.
func TestMetaChangedThroughMetadata(t *testing.T) {
	p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan map[string]any, 1)
	s := &svc{Name: "meta2"}
	s.Channels = channels.Channels{
		"a": channels.On(func(ctx context.Context, m *channels.Message) error {
			ctx = metadata.Set(ctx, "UserId", "6")
			ctx = channels.WithMeta(ctx, map[string]any{"roles": []any{"admin"}})
			return s.SendToChannel(ctx, "b", 1)
		}),
		"b": channels.On(func(ctx context.Context, m *channels.Message) error {
			ci, _ := channels.FromContext(ctx)
			got <- ci.Meta
			return nil
		}),
	}
	if err := p.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	node := base64.StdEncoding.EncodeToString([]byte(`{"userId":5,"traceOn":true}`))
	if err := s.SendToChannel(context.Background(), "a", 1, broker.WithHeader(broker.HeaderMeta, node)); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"userId": "6", "traceOn": true, "roles": []any{"admin"}}
	if m := <-got; !reflect.DeepEqual(m, want) {
		t.Fatalf("meta = %v, want %v", m, want)
	}
}
