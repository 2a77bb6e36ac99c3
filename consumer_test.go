package channels_test

import (
	"context"
	"sync"
	"testing"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// recordingAdapter records the consumer names the plugin subscribes with.
type recordingAdapter struct {
	*memory.Adapter
	mu    sync.Mutex
	names []string
	env   broker.Env
}

func (r *recordingAdapter) Connect(ctx context.Context, env broker.Env) error {
	r.mu.Lock()
	r.env = env
	r.mu.Unlock()
	return r.Adapter.Connect(ctx, env)
}

func (r *recordingAdapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	r.mu.Lock()
	r.names = append(r.names, ch.ConsumerName)
	r.mu.Unlock()
	return r.Adapter.Subscribe(ctx, ch)
}

func (r *recordingAdapter) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[len(r.names)-1]
}

// TestConsumerNamesUniquePerPlugin: two plugins of one service in one
// process (two members of one group) get distinct consumer names, with the
// default node id and with one given by WithNodeID; with WithNodeID the
// names are the same after a restart.
func TestConsumerNamesUniquePerPlugin(t *testing.T) {
	noop := channels.On(func(context.Context, *channels.Message) error { return nil })
	ctx := context.Background()
	for _, nodeOpts := range [][]channels.Option{nil, {channels.WithNodeID("node-a")}} {
		bus := memory.NewBus()
		var ads [2]*recordingAdapter
		var ps [2]*channels.Plugin
		for i := range ps {
			ads[i] = &recordingAdapter{Adapter: memory.New(memory.WithBus(bus))}
			p, err := channels.New(append([]channels.Option{channels.WithAdapter(ads[i])}, nodeOpts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Register(&svc{Name: "payments", Channels: channels.Channels{"order.created": noop}}); err != nil {
				t.Fatal(err)
			}
			ps[i] = p
		}
		start := func() [2]string {
			var out [2]string
			for i, p := range ps {
				if err := p.Start(ctx); err != nil {
					t.Fatal(err)
				}
				out[i] = ads[i].last()
			}
			for _, p := range ps {
				if err := p.Stop(ctx); err != nil {
					t.Fatal(err)
				}
			}
			return out
		}
		first := start()
		if first[0] == first[1] {
			t.Fatalf("node options %v: both plugins consume as %q", nodeOpts, first[0])
		}
		if ads[0].env.NodeID == ads[1].env.NodeID {
			t.Fatalf("node options %v: both adapters got node id %q", nodeOpts, ads[0].env.NodeID)
		}
		if nodeOpts != nil {
			if first[0] != "node-a.payments.order.created" {
				t.Fatalf("first consumer name = %q, want the node id's", first[0])
			}
			if again := start(); again != first {
				t.Fatalf("consumer names changed across a restart: %v then %v", first, again)
			}
		}
	}
}
