package channels_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// TestRequestIDsUniqueAcrossRestarts: two runs with the same node id (a
// restart) must not produce the same request ids; ids are UUIDs, as
// moleculer's.
func TestRequestIDsUniqueAcrossRestarts(t *testing.T) {
	seen := map[string]bool{}
	for run := 0; run < 2; run++ {
		p, err := channels.New(channels.WithAdapter(memory.New(memory.WithBus(memory.NewBus()))), channels.WithNodeID("payments"))
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan [2]string, 1)
		s := &svc{Name: "ids", Channels: channels.Channels{"c": channels.On(func(ctx context.Context, m *channels.Message) error {
			ci, _ := channels.FromContext(ctx)
			got <- [2]string{m.Headers[broker.HeaderRequestID], ci.ID}
			return nil
		})}}
		if err := p.Register(s); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx := channels.WithMeta(context.Background(), map[string]any{"k": 1}) // a ctx with meta gets a request id
		if err := s.SendToChannel(ctx, "c", 1); err != nil {
			t.Fatal(err)
		}
		ids := <-got
		if err := p.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if u, err := uuid.Parse(id); err != nil {
				t.Errorf("run %d: id %q is not a UUID", run, id)
			} else if u.Version() != 4 || u.Variant() != uuid.RFC4122 {
				t.Errorf("run %d: id %q is UUID version %d, variant %s, want a random (version 4) RFC 9562 UUID", run, id, u.Version(), u.Variant())
			}
			if seen[id] {
				t.Fatalf("run %d: id %q seen in the previous run", run, id)
			}
			seen[id] = true
		}
	}
}
