package cluster

// Profile rabbitmq-cluster (scripts/cluster/rabbitmq-cluster.sh): three
// RabbitMQ nodes rabbitc1..3@localhost, AMQP on 127.0.0.1:5681-5683,
// cluster_partition_handling = pause_minority.
//
// The adapter gets the three nodes as a ';'-separated failover list: each
// connection attempt takes the next address, so a connection lost with its
// node is dialed again on another one and the consumers resubscribe there.
// Group queues are quorum queues (the adapter's default) with a member on
// each node; a send returns once its publisher confirm came, that is once a
// Raft majority of the queue's members has written it.
//
// Leader: the node leading the channel's quorum queue (rabbitmqctl
// list_queues name leader). NewAdapterOn(i): an adapter with node i's URL
// only. Isolate: node i's Erlang distribution links to the other nodes are
// cut (a cookie the peers refuse, then disconnect_node); pause_minority
// makes it stop serving, so sends through it fail until Heal.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
)

const rabbitProfile = "rabbitmq-cluster"

// rabbitURLs are the cluster's nodes, in node index order.
var rabbitURLs = []string{
	"amqp://guest:guest@127.0.0.1:5681/",
	"amqp://guest:guest@127.0.0.1:5682/",
	"amqp://guest:guest@127.0.0.1:5683/",
}

func init() {
	registerProfile(rabbitProfile, func() channelstest.Target {
		c := scriptHooks(rabbitProfile, len(rabbitURLs))
		c.Leader = func(ctx context.Context, channel string) (int, error) {
			out, err := clusterCmd(ctx, rabbitProfile, "leader", channel)
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(lastLine(out))
		}
		c.NewAdapterOn = func(i int) (broker.Adapter, error) {
			return rabbitAdapters.Track(amqp.New(rabbitURLs[i]))
		}
		return channelstest.Target{
			Name: rabbitProfile,
			NewAdapter: func() (broker.Adapter, error) {
				return rabbitAdapters.Track(amqp.New(strings.Join(rabbitURLs, ";")))
			},
			Probe:     rabbitPing,
			Timeout:   20 * time.Second,
			Processes: true,
			// A message stays with its consumer while its connection
			// lives, and comes back at once when it dies.
			ClaimTime: 0,
			AfterSpec: rabbitAdapters.DeleteDeclared,
			Cluster:   c,
		}
	})
}

// lastLine is the last line of a command's output (the script logs on
// stderr, which CombinedOutput mixes in).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// rabbitDial connects to the first node that answers.
func rabbitDial() (*amqp091.Connection, error) {
	var errs []string
	for _, u := range rabbitURLs {
		c, err := amqp091.DialConfig(u, amqp091.Config{Dial: amqp091.DefaultDial(3 * time.Second)})
		if err == nil {
			return c, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("no node of %s answers: %s", rabbitProfile, strings.Join(errs, "; "))
}

// rabbitPing checks a node completes an AMQP handshake and opens a channel.
func rabbitPing() error {
	c, err := rabbitDial()
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	return ch.Close()
}

// rabbitAdapters are the adapters built during the running spec; at its
// end the queues and exchanges they declared are deleted (quorum queues on
// three nodes are heavy: the scenarios leave none behind).
var rabbitAdapters = &brokerenv.AMQPTracker{
	Dial: rabbitDial,
	Logf: func(f string, args ...any) { GinkgoWriter.Printf("rabbitmq-cluster "+f, args...) },
}
