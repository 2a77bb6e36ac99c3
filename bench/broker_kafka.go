package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
	chkafka "github.com/microchannels/channels/kafka"
)

// kafkaBroker: Kafka. The topic of a throughput run (sequential,
// concurrent, batch) has kafkaPartitions partitions, the topic of a latency
// run one (a ping-pong has one message in flight: more partitions change
// nothing but the group's work); every column's topic is created up front,
// the library's by its adapter (TopicOptions.Partitions), the Node one by
// node/bench.js. Sends wait for all in-sync replicas (acks=-1) and have no
// key (spread over the partitions). Consumer groups are "bench:<channel>",
// as the library and @moleculer/channels name the group "bench" of a
// channel.
//
// Raw: kafka-go, a Writer (round-robin over the partitions; batches of 1
// for sequential sends, of up to the number of senders for concurrent
// ones, of a partition's share of the batch for the batch test, so that
// each share is written at once; 1 ms batch timeout) and a group Reader
// whose messages go to MaxInFlight handlers, offsets committed in order
// behind them, asynchronously (CommitInterval).
// Watermill: watermill-kafka (Sarama), sync publisher; its subscriber hands
// a partition's next message once the previous one is acked, so one
// subscription (up to one message in flight per partition).
//
// On the cluster profile kafka-cluster (scripts/cluster.sh) every topic has
// 3 replicas and min.insync.replicas 2, sends acks=all on every side.
type kafkaBroker struct {
	name    string
	brokers func() []string
	// replication is the replication factor of the topics (0: 1, the
	// single node's).
	replication int
	// configs are the topic configs of the created topics.
	configs map[string]string
}

func init() {
	register(kafkaBroker{name: "kafka", brokers: kafkaBrokers})
	register(kafkaBroker{name: "kafka-cluster", brokers: kafkaClusterBrokers, replication: 3,
		configs: map[string]string{"min.insync.replicas": "2"}})
}

func (b kafkaBroker) Name() string { return b.name }

func (b kafkaBroker) Setup(ctx context.Context) (string, error) {
	d := kafka.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", b.brokers()[0])
	if err != nil {
		return "", fmt.Errorf("%s unreachable: %w", b.name, err)
	}
	defer conn.Close()
	bs, err := conn.Brokers()
	if err != nil {
		return "", err
	}
	if b.replication > 1 {
		return fmt.Sprintf("Kafka %s (%d brokers, replication %d, min.insync.replicas %s)",
			b.version(ctx, bs), len(bs), b.replication, b.configs["min.insync.replicas"]), nil
	}
	return "Kafka " + b.version(ctx, bs), nil
}

// rf is the replication factor of the created topics.
func (b kafkaBroker) rf() int { return max(1, b.replication) }

// version: the protocol does not tell the release. It is read from
// the broker jars that scripts/services.sh installs, else the broker's
// inter.broker.protocol.version (its metadata version under KRaft) is
// given.
func (b kafkaBroker) version(ctx context.Context, bs []kafka.Broker) string {
	var dirs []string
	if d := os.Getenv("CHANNELS_SERVICES_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, filepath.Join("..", ".services"))
	for _, d := range dirs {
		jars, _ := filepath.Glob(filepath.Join(d, "kafka", "libs", "kafka-server-[0-9]*.jar"))
		if len(jars) > 0 {
			return strings.TrimSuffix(strings.TrimPrefix(filepath.Base(jars[0]), "kafka-server-"), ".jar")
		}
	}
	if len(bs) > 0 {
		tr := &kafka.Transport{}
		defer tr.CloseIdleConnections()
		c := &kafka.Client{Addr: kafka.TCP(b.brokers()...), Timeout: 5 * time.Second, Transport: tr}
		res, err := c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeBroker, ResourceName: strconv.Itoa(bs[0].ID),
			ConfigNames: []string{"inter.broker.protocol.version"}}}})
		if err == nil && len(res.Resources) == 1 {
			for _, e := range res.Resources[0].ConfigEntries {
				if e.ConfigValue != "" {
					return "(inter.broker.protocol.version " + e.ConfigValue + ")"
				}
			}
		}
	}
	return "(version unknown)"
}

// kafkaPartitions is the partition count of a throughput run's topic
// (node/bench.js has the same).
const kafkaPartitions = 10

// partitionsFor is the partition count of a run's topic.
func partitionsFor(t Test) int {
	if t == Latency {
		return 1
	}
	return kafkaPartitions
}

// Channels: the adapter creates the topic, with as many partitions as the
// other columns have.
func (b kafkaBroker) Channels(cfg Config) (func() (broker.Adapter, error), error) {
	topic := chkafka.TopicOptions{Partitions: partitionsFor(cfg.Test), Configs: b.configs}
	if b.replication > 0 {
		topic.ReplicationFactor = b.replication
	}
	return func() (broker.Adapter, error) {
		return chkafka.NewFromBrokers(b.brokers(), chkafka.WithChannelOptions(chkafka.ChannelOptions{Topic: topic}))
	}, nil
}

func (b kafkaBroker) Node() (string, []string) { return "kafka", b.brokers() }

// controller dials the cluster's controller, where topics are created and
// deleted.
func (b kafkaBroker) controller(ctx context.Context) (*kafka.Conn, error) {
	d := kafka.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", b.brokers()[0])
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c, err := conn.Controller()
	if err != nil {
		return nil, err
	}
	return d.DialContext(ctx, "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
}

// createTopic creates topic with parts partitions (the broker's replication
// factor and configs) and returns once the broker serving the clients knows
// the leader of each.
func (b kafkaBroker) createTopic(ctx context.Context, topic string, parts int) error {
	c, err := b.controller(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: parts, ReplicationFactor: b.rf()}
	for k, v := range b.configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	if err := c.CreateTopics(tc); err != nil {
		return err
	}
	for {
		conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", b.brokers()[0])
		if err != nil {
			return err
		}
		ps, err := conn.ReadPartitions(topic)
		conn.Close()
		if err == nil && len(ps) == parts && allLed(ps) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: no leader for every partition: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func allLed(ps []kafka.Partition) bool {
	for _, p := range ps {
		if p.Leader.ID < 0 {
			return false
		}
	}
	return true
}

func (b kafkaBroker) Cleanup(ctx context.Context, channel string) error {
	c, err := b.controller(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.DeleteTopics(channel)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		err = nil
	}
	return err
}

func (b kafkaBroker) Watermill() Impl {
	return watermillImpl{setup: func(ctx context.Context, channel string, cfg Config) (*wmPubSub, error) {
		if err := b.createTopic(ctx, channel, partitionsFor(cfg.Test)); err != nil {
			return nil, err
		}
		pc := wmkafka.DefaultSaramaSyncPublisherConfig()
		pc.Producer.RequiredAcks = sarama.WaitForAll
		pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{Brokers: b.brokers(),
			Marshaler: wmkafka.DefaultMarshaler{}, OverwriteSaramaConfig: pc}, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		sc := wmkafka.DefaultSaramaSubscriberConfig()
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
		sub, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{Brokers: b.brokers(),
			Unmarshaler: wmkafka.DefaultMarshaler{}, ConsumerGroup: "bench:" + channel, OverwriteSaramaConfig: sc}, watermill.NopLogger{})
		if err != nil {
			_ = pub.Close()
			return nil, err
		}
		return &wmPubSub{
			pub: pub,
			subscribe: func(ctx context.Context, _ int) (<-chan *message.Message, error) {
				return sub.Subscribe(ctx, channel)
			},
			subs:  1,
			close: func() error { return errors.Join(sub.Close(), pub.Close()) },
		}, nil
	}}
}

func (b kafkaBroker) Raw() Impl { return kafkaRaw{b} }

type kafkaRaw struct{ b kafkaBroker }

type kafkaSession struct {
	tr     *kafka.Transport
	w      *kafka.Writer
	r      *kafka.Reader
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// kafkaItem is a fetched message; done is closed when its handler ran.
type kafkaItem struct {
	m    kafka.Message
	done chan struct{}
}

func (r kafkaRaw) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	if err := r.b.createTopic(ctx, channel, partitionsFor(cfg.Test)); err != nil {
		return nil, err
	}
	batch, timeout := 1, time.Millisecond
	switch cfg.Test {
	case Concurrent:
		batch = cfg.Senders
	case Batch:
		// the round-robin balancer gives each partition its share of a
		// batch: a share fills a partition's batch, written without waiting
		// for the batch timeout
		parts := partitionsFor(cfg.Test)
		batch = (cfg.Batch + parts - 1) / parts
	}
	// A transport of its own: the shared default one caches the cluster's
	// metadata and would not know the new topic for seconds.
	tr := &kafka.Transport{}
	s := &kafkaSession{
		tr: tr,
		w: &kafka.Writer{Addr: kafka.TCP(r.b.brokers()...), Topic: channel, RequiredAcks: kafka.RequireAll,
			BatchSize: batch, BatchTimeout: timeout, Transport: tr},
		r: kafka.NewReader(kafka.ReaderConfig{Brokers: r.b.brokers(), GroupID: "bench:" + channel, Topic: channel,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 500 * time.Millisecond,
			CommitInterval: 100 * time.Millisecond, StartOffset: kafka.FirstOffset}),
	}
	cctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	mif := cfg.MaxInFlight
	jobs := make(chan kafkaItem, mif)
	order := make(chan kafkaItem, 2*mif)
	s.wg.Add(1)
	go func() { // fetch
		defer s.wg.Done()
		defer close(jobs)
		defer close(order)
		for {
			m, err := s.r.FetchMessage(cctx)
			if err != nil {
				return
			}
			it := kafkaItem{m: m, done: make(chan struct{})}
			select {
			case order <- it:
			case <-cctx.Done():
				return
			}
			select {
			case jobs <- it:
			case <-cctx.Done():
				return
			}
		}
	}()
	for range mif {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for it := range jobs {
				handle(cctx, it.m.Value)
				close(it.done)
			}
		}()
	}
	s.wg.Add(1)
	go func() { // commit in order, behind the handlers
		defer s.wg.Done()
		for it := range order {
			select {
			case <-it.done:
				_ = s.r.CommitMessages(cctx, it.m)
			case <-cctx.Done():
				return
			}
		}
	}()
	return s, nil
}

func (s *kafkaSession) Send(ctx context.Context, p []byte) error {
	return s.w.WriteMessages(ctx, kafka.Message{Value: p})
}

func (s *kafkaSession) SendBatch(ctx context.Context, ps [][]byte) error {
	if len(ps) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(ps))
	for i, p := range ps {
		msgs[i] = kafka.Message{Value: p}
	}
	return s.w.WriteMessages(ctx, msgs...)
}

func (s *kafkaSession) Close(context.Context) error {
	s.cancel()
	err := s.r.Close()
	s.wg.Wait()
	err = errors.Join(err, s.w.Close())
	s.tr.CloseIdleConnections()
	return err
}
