package cluster

// Profile kafka-cluster (scripts/cluster/kafka-cluster.sh): three KRaft
// nodes, each controller and broker, clients on 127.0.0.1:9191-9193.
//
// The adapter bootstraps from the three nodes and keeps its defaults for
// durability: topics created with the replication factor chosen from the
// cluster's size (3) and min.insync.replicas 2, sends with acks=all. Group
// timings are short, as in the single-node target.
//
// Leader: the leader of partition 0 of the channel's topic (metadata).
// NewAdapterOn(i): an adapter bootstrapped from node i only (a Kafka client
// then talks to the brokers the metadata names, so what "through node i"
// means is: its metadata, and whatever partitions it leads). Isolate: the
// proxies of node i's links to the other nodes' inter-broker and
// controller listeners are disabled, both ways; its clients still reach
// it. A partition it led takes no acks=all send any more (its followers
// stopped fetching and it cannot reach the controller to shrink the ISR),
// so the sends through it fail until the majority's new leader is known.

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/kafka"
)

const kafkaProfile = "kafka-cluster"

// kafkaNodes are the client addresses of the nodes, in node index order
// (node ids 1..3).
var kafkaNodes = []string{"127.0.0.1:9191", "127.0.0.1:9192", "127.0.0.1:9193"}

// kafkaClusterTimings are the group timings of the single-node target: a
// member's partitions move within seconds.
var kafkaClusterTimings = kafka.ChannelOptions{
	SessionTimeout:    2 * time.Second,
	HeartbeatInterval: 200 * time.Millisecond,
	RebalanceTimeout:  15 * time.Second,
	CommitInterval:    50 * time.Millisecond,
	MaxWait:           200 * time.Millisecond,
}

func init() {
	registerProfile(kafkaProfile, func() channelstest.Target {
		c := scriptHooks(kafkaProfile, len(kafkaNodes))
		c.Leader = kafkaLeader
		c.NewAdapterOn = func(i int) (broker.Adapter, error) { return kafka.NewFromBrokers(kafkaNodes[i : i+1]) }
		return channelstest.Target{
			Name:           kafkaProfile,
			NewAdapter:     func() (broker.Adapter, error) { return kafka.NewFromBrokers(kafkaNodes) },
			ChannelOptions: []any{kafkaClusterTimings},
			Probe:          kafkaClusterPing,
			Timeout:        30 * time.Second,
			Processes:      true,
			ClaimTime:      kafkaClusterTimings.SessionTimeout + 2*time.Second,
			AfterSpec:      kafkaDeleteFaultTopics,
			Cluster:        c,
		}
	})
}

func kafkaClusterClient() *kafkago.Client {
	return &kafkago.Client{Addr: kafkago.TCP(kafkaNodes...), Timeout: 5 * time.Second,
		Transport: &kafkago.Transport{DialTimeout: 2 * time.Second, MetadataTTL: time.Second}}
}

// kafkaClusterPing asks a node for the cluster's metadata and checks that
// it names the three brokers.
func kafkaClusterPing() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	md, err := kafkaClusterClient().Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{}})
	if err != nil {
		return err
	}
	if len(md.Brokers) != len(kafkaNodes) {
		return fmt.Errorf("%s: %d brokers in the metadata, want %d", kafkaProfile, len(md.Brokers), len(kafkaNodes))
	}
	return nil
}

// kafkaLeader is the node leading partition 0 of the channel's topic.
func kafkaLeader(ctx context.Context, channel string) (int, error) {
	md, err := kafkaClusterClient().Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{channel}})
	if err != nil {
		return 0, err
	}
	for _, t := range md.Topics {
		if t.Name != channel {
			continue
		}
		if t.Error != nil {
			return 0, t.Error
		}
		for _, p := range t.Partitions {
			if p.ID == 0 {
				if id := p.Leader.ID; id >= 1 && id <= len(kafkaNodes) {
					return id - 1, nil
				}
				return 0, fmt.Errorf("partition 0 of %q: leader %d is not a node of the cluster", channel, p.Leader.ID)
			}
		}
	}
	return 0, fmt.Errorf("topic %q not in the metadata", channel)
}

// kafkaDeleteFaultTopics deletes the topics of the scenarios ("fault."
// channels and their dead-letter topics): the cluster runs one spec at a
// time and nothing else uses it.
func kafkaDeleteFaultTopics() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := kafkaClusterClient()
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		GinkgoWriter.Printf("kafka-cluster cleanup: %v\n", err)
		return
	}
	var topics []string
	for _, t := range md.Topics {
		if strings.Contains(t.Name, "fault.") {
			topics = append(topics, t.Name)
		}
	}
	if len(topics) == 0 {
		return
	}
	if _, err := c.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics}); err != nil {
		GinkgoWriter.Printf("kafka-cluster cleanup: %v\n", err)
	}
}
