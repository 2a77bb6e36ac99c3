package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream"
)

// natsClusterURLs are the client URLs of scripts/cluster/nats-cluster.sh:
// node i (server_name "n<i>") answers on port 4231+i.
var natsClusterURLs = []string{"nats://127.0.0.1:4231", "nats://127.0.0.1:4232", "nats://127.0.0.1:4233"}

// natsClusterTimings: redeliveries within the suite's deadlines.
var natsClusterTimings = jetstream.ChannelOptions{AckWait: 2 * time.Second, FetchTimeout: time.Second}

// natsClusterReplicas: every stream and the records bucket on the three
// nodes; a send returns once two of them stored it.
const natsClusterReplicas = 3

func natsClusterAdapter(urls ...string) (broker.Adapter, error) {
	return jetstream.New(strings.Join(urls, ","), jetstream.WithReplicas(natsClusterReplicas),
		jetstream.WithNATSOptions(nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1)))
}

func init() {
	registerProfile("nats-cluster", func() channelstest.Target {
		c := scriptHooks("nats-cluster", len(natsClusterURLs))
		c.Leader = natsClusterLeader
		c.NewAdapterOn = func(i int) (broker.Adapter, error) { return natsClusterAdapter(natsClusterURLs[i]) }
		return channelstest.Target{
			Name:           "nats-cluster",
			NewAdapter:     func() (broker.Adapter, error) { return natsClusterAdapter(natsClusterURLs...) },
			ChannelOptions: []any{natsClusterTimings},
			Probe: func() error {
				nc, err := nats.Connect(strings.Join(natsClusterURLs, ","), nats.Timeout(2*time.Second))
				if err != nil {
					return err
				}
				nc.Close()
				return nil
			},
			Timeout:   30 * time.Second,
			Processes: true,
			ClaimTime: natsClusterTimings.AckWait,
			Cluster:   c,
		}
	})
}

// natsClusterLeader returns the node leading the channel's stream
// (StreamInfo.Cluster.Leader, a server name "n<i>").
func natsClusterLeader(ctx context.Context, channel string) (int, error) {
	nc, err := nats.Connect(strings.Join(natsClusterURLs, ","), nats.Timeout(2*time.Second))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	j, err := js.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		s, err := j.Stream(ctx, jetstream.StreamName(channel))
		if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader != "" {
			name := s.CachedInfo().Cluster.Leader
			i, err := strconv.Atoi(strings.TrimPrefix(name, "n"))
			if err != nil || i < 0 || i >= len(natsClusterURLs) {
				return 0, fmt.Errorf("stream leader %q is no node of the profile", name)
			}
			return i, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("nats-cluster leader of %q: %v (%w)", channel, err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
