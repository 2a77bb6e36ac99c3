package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// Short group timings: a crashed member's partitions are taken over within
// the suite's deadlines (the broker allows sessions from 1s, see
// scripts/services.sh), and rebalances are noticed quickly.
var kafkaTestTimings = kafka.ChannelOptions{
	SessionTimeout:    2 * time.Second,
	HeartbeatInterval: 200 * time.Millisecond,
	RebalanceTimeout:  15 * time.Second,
	CommitInterval:    50 * time.Millisecond,
	MaxWait:           200 * time.Millisecond,
}

// kafkaOrdered is a channel of one partition: one order for all messages.
func kafkaOrdered() kafka.ChannelOptions {
	o := kafkaTestTimings
	o.Topic.Partitions = 1
	return o
}

// kafkaSlowLink gives a fetch a MaxWait longer than a 400 ms round trip:
// kafka-go waits MaxWait for the first byte of a fetch's answer, so a
// link slower than MaxWait fetches nothing.
func kafkaSlowLink() kafka.ChannelOptions {
	o := kafkaTestTimings
	o.MaxWait = time.Second
	return o
}

func kafkaURL() string { return "kafka://" + strings.Join(brokerenv.KafkaBrokers(), ",") }

func init() {
	registerTarget(channelstest.Target{
		Name:           "kafka",
		NewAdapter:     func() (broker.Adapter, error) { return kafka.New(kafkaURL()) },
		ChannelOptions: []any{kafkaTestTimings},
		Ordered:        []any{kafkaOrdered()},
		SlowLink:       []any{kafkaSlowLink()},
		Probe:          func() error { return brokerenv.Probe("kafka", kafkaPing) },
		Timeout:        20 * time.Second,
		Processes:      true,
		Linked: func() (broker.Adapter, *channelstest.Links, error) {
			ls := channelstest.NewLinks(brokerenv.KafkaBrokers()...)
			// The brokers advertise their own addresses: every dial, to the
			// bootstrap list or to an advertised address, goes to a proxy.
			t := &kafkago.Transport{Dial: ls.Dial, DialTimeout: 2 * time.Second}
			d := &kafkago.Dialer{DialFunc: ls.Dial, Timeout: 2 * time.Second}
			a, err := kafka.New(kafkaURL(), kafka.WithTransport(t, d))
			return a, ls, err
		},
		// A silent member's partitions move after its session timeout and
		// a rebalance (every member rejoins).
		ClaimTime:  kafkaTestTimings.SessionTimeout + 2*time.Second,
		Restart:    kafkaRestart,
		BrokerDown: kafkaDown,
		BrokerUp:   kafkaUp,
		Hostile:    kafkaHostile,
	})
}

func kafkaClient() *kafkago.Client {
	return &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...), Timeout: 3 * time.Second}
}

// kafkaPing asks the broker for its metadata on a new connection (a
// kafka-go transport answers metadata requests from its cache).
func kafkaPing() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	t := &kafkago.Transport{DialTimeout: 2 * time.Second}
	defer t.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...), Timeout: 3 * time.Second, Transport: t}
	_, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{}})
	return err
}

// kafkaPid is the pid scripts/services.sh wrote for the broker it started.
func kafkaPid() string {
	root, err := repoRoot()
	if err != nil {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(servicesDir(root), "kafka", "kafka.pid"))
	return strings.TrimSpace(string(b))
}

func kafkaRestart(ctx context.Context) error {
	before := kafkaPid()
	if err := services(ctx, "restart", "kafka"); err != nil {
		return err
	}
	switch after := kafkaPid(); {
	case kafkaPing() != nil:
		return errors.New("kafka does not answer after the restart")
	case before == "" || after == before:
		return fmt.Errorf("kafka was not restarted (pid %q before, %q after): %s", before, after, notOurs("kafka"))
	}
	return nil
}

func kafkaDown(ctx context.Context) error {
	if err := services(ctx, "down", "kafka"); err != nil {
		return err
	}
	if kafkaPing() == nil {
		return fmt.Errorf("kafka still answers after down: %s", notOurs("kafka"))
	}
	return nil
}

func kafkaUp(ctx context.Context) error {
	if err := services(ctx, "up", "kafka"); err != nil {
		return err
	}
	if err := kafkaPing(); err != nil {
		return fmt.Errorf("kafka does not answer after up: %w", err)
	}
	return nil
}

// kafkaHostile writes a raw record with plain kafka-go to partition 0 (the
// topic is created as the adapter would). A Kafka record has no headers
// blob (headers are native key/value pairs), so that entry is unsupported;
// an entry without payload is a record with a null value.
func kafkaHostile(ctx context.Context, channel string, e channelstest.RawEntry) (string, error) {
	if e.Headers != nil {
		return "", fmt.Errorf("kafka has no serialized headers blob: %w", errors.ErrUnsupported)
	}
	c := kafkaClient()
	res, err := c.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{
		Topic: channel, NumPartitions: kafka.DefaultPartitions, ReplicationFactor: -1}}})
	if err == nil {
		err = res.Errors[channel]
	}
	if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
		return "", err
	}
	var value kafkago.Bytes
	if !e.NoPayload {
		value = kafkago.NewBytes(e.Payload)
	}
	for {
		pr, err := c.Produce(ctx, &kafkago.ProduceRequest{Topic: channel, Partition: 0, RequiredAcks: kafkago.RequireAll,
			Records: kafkago.NewRecordReader(kafkago.Record{Value: value})})
		if err == nil && pr.Error == nil {
			return "0:" + strconv.FormatInt(pr.BaseOffset, 10), nil
		}
		if err == nil {
			err = pr.Error
		}
		if !errors.Is(err, kafkago.LeaderNotAvailable) && !errors.Is(err, kafkago.UnknownTopicOrPartition) {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
