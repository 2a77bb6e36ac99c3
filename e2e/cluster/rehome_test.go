package cluster

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream"
)

// A consumer connected to the node that gets cut off from the others moves
// to another server (jetstream.RehomeAfter) and goes on consuming what is
// sent through the majority. Runs on the nats-cluster profile only (its
// name matches make test-cluster's -run TestCluster).
func TestClusterNATSConsumerLeavesACutOffNode(t *testing.T) {
	if os.Getenv("CHANNELS_CLUSTER") != "nats-cluster" {
		t.Skip("needs CHANNELS_CLUSTER=nats-cluster (make test-cluster)")
	}
	const cut = 1
	ctx := context.Background()
	// The consumer's adapter knows every server but connects to node 1 first.
	urls := append([]string{natsClusterURLs[cut]}, natsClusterURLs[0], natsClusterURLs[2])
	ca, err := jetstream.New(strings.Join(urls, ","), jetstream.WithReplicas(natsClusterReplicas),
		jetstream.WithChannelOptions(natsClusterTimings),
		jetstream.WithNATSOptions(nats.DontRandomize(), nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1)))
	if err != nil {
		t.Fatal(err)
	}
	ch := channelstest.Unique("cluster.rehome")
	var got atomic.Int64
	channelstest.StartPlugin(t, ca, &channelstest.Service{Name: "rehome", Channels: channels.Channels{ch: {
		Handler: func(context.Context, *channels.Message) error { got.Add(1); return nil }}}})
	sa, err := natsClusterAdapter(natsClusterURLs[0]) // the sender stays on the majority side
	if err != nil {
		t.Fatal(err)
	}
	snd := channelstest.StartPlugin(t, sa, nil)
	send := func(n int) {
		t.Helper()
		for i := range n {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := snd.SendToChannel(sctx, ch, i)
			cancel()
			if err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
	}
	send(10)
	channelstest.EventuallyTrue(t, 20*time.Second, "consuming through node 1", func() bool { return got.Load() >= 10 })

	if _, err := clusterCmd(ctx, "nats-cluster", "isolate", "1"); err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			_, _ = clusterCmd(context.Background(), "nats-cluster", "heal", "1")
		}
	}()
	// Sends through node 0 succeed once the majority has the stream's
	// leader; the consumer on node 1 sees them only after it moved.
	channelstest.EventuallyTrue(t, 30*time.Second, "a send through the majority", func() bool {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return snd.SendToChannel(sctx, ch, -1) == nil
	})
	send(20)
	channelstest.EventuallyTrue(t, jetstream.RehomeAfter+30*time.Second, "the consumer left the cut-off node and consumes again",
		func() bool { return got.Load() >= 31 })
	if _, err := clusterCmd(ctx, "nats-cluster", "heal", "1"); err != nil {
		t.Fatal(err)
	}
	healed = true
}
