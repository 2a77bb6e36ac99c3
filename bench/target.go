package main

import (
	"context"
	"errors"
	"slices"
	"sort"

	"github.com/microchannels/channels/broker"
)

// A Broker is one adapter of the benchmark: how to reach the broker and the
// implementations measured on it. Adding an adapter is one file that
// implements Broker and calls register from an init function.
type Broker interface {
	// Name is the adapter's name on the command line and in the table.
	Name() string
	// Setup checks that the broker answers and returns its version, for
	// the header of the report ("Redis 7.0.15").
	Setup(ctx context.Context) (version string, err error)
	// Channels returns the constructor of the library's adapter for one run
	// (called once for the consumer plugin and once for the producer), or
	// nil when the library has no adapter for this broker yet (the
	// channels column then says n/a).
	Channels(cfg Config) (func() (broker.Adapter, error), error)
	// Raw is the driver used directly, at its best.
	Raw() Impl
	// Watermill is Watermill with its pub/sub for this broker, or nil.
	Watermill() Impl
	// Node is the --adapter argument of node/bench.js and the address
	// arguments it needs ("" when @moleculer/channels has no such adapter).
	Node() (adapter string, args []string)
	// Cleanup deletes what a run on channel left on the broker (streams,
	// exchanges, queues, topics), whichever implementation made it.
	Cleanup(ctx context.Context, channel string) error
}

// An Impl is one implementation of a channel on a broker, driven by the
// tests of this program.
type Impl interface {
	// Open creates the consumer group "bench" of a new channel (named as
	// each broker's side names a group), consumed
	// with up to cfg.MaxInFlight handlers at once, each calling handle and
	// then acknowledging the message, and returns the sending side. It
	// returns once the consumer is subscribed, as far as the
	// implementation tells; the tests warm up before measuring anyway.
	Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error)
}

// Handle is what a consumer runs for each message; ctx is the handler's
// context (the latency test sends the next message from it).
type Handle func(ctx context.Context, payload []byte)

// A Session is the sending side of an open channel.
type Session interface {
	// Send sends one message and returns once the broker accepted it (the
	// implementation's strongest acknowledgement).
	Send(ctx context.Context, payload []byte) error
	// SendBatch sends the payloads with the implementation's batch API
	// and returns once the broker accepted all of them. Without a batch
	// API it returns errNoBatch, at once, whatever the payloads; with one,
	// an empty batch is a no-op.
	SendBatch(ctx context.Context, payloads [][]byte) error
	// Close stops the consumer and the producer.
	Close(ctx context.Context) error
}

// errNoBatch is the SendBatch error of an implementation without a batch
// API: the batch row says n/a.
var errNoBatch = errors.New("no batch send API")

// errNotAvailable marks an implementation missing on a broker (n/a).
var errNotAvailable = errors.New("not available")

// Config describes one run.
type Config struct {
	Test        Test
	MaxInFlight int
	Senders     int // concurrent senders of the concurrent test
	Batch       int // messages per batch of the batch test
}

var brokers = map[string]Broker{}

func register(b Broker) { brokers[b.Name()] = b }

// adapterOrder is the order of the report; adapters registered under other
// names come after, alphabetically.
var adapterOrder = []string{"memory", "redis", "redis-cluster", "amqp", "nats", "kafka",
	"redis-cluster-ha", "nats-cluster", "rabbitmq-cluster", "kafka-cluster"}

// clusterProfiles are the adapters on the 3-node clusters of
// scripts/cluster.sh (make bench-cluster): measured only when named with
// -adapters, as those clusters run only while their profile is up.
var clusterProfiles = []string{"redis-cluster-ha", "nats-cluster", "rabbitmq-cluster", "kafka-cluster"}

// adapterRank is the position of an adapter in the report.
func adapterRank(name string) int {
	if i := slices.Index(adapterOrder, name); i >= 0 {
		return i
	}
	return len(adapterOrder)
}

// brokerNames are every registered adapter, in the report's order.
func brokerNames() []string {
	var out []string
	for n := range brokers {
		out = append(out, n)
	}
	sort.Strings(out)
	slices.SortStableFunc(out, func(a, b string) int { return adapterRank(a) - adapterRank(b) })
	return out
}

// defaultAdapters are the adapters measured without -adapters: all but the
// cluster profiles.
func defaultAdapters() []string {
	return slices.DeleteFunc(brokerNames(), func(n string) bool { return slices.Contains(clusterProfiles, n) })
}
