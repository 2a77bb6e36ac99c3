package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/channelstest/linkfault"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// TestTenChannelsAtStart: a service with 10 channels starts within its
// connect timeout although each group takes seconds to form (the link of
// the group members is slowed by 200 ms each way, as Kafka's default
// group.initial.rebalance.delay.ms of 3 s holds a new group's first
// generation): the groups are joined at the same time, off the connect
// deadline, and every channel consumes.
func TestTenChannelsAtStart(t *testing.T) {
	needKafka(t)
	brokers := brokerenv.KafkaBrokers()
	if len(brokers) != 1 {
		t.Fatalf("the link-fault proxy maps one broker; CHANNELS_KAFKA_BROKERS has %d", len(brokers))
	}
	l := linkfault.New(t, brokers[0])
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, l.Addr())
	}
	// The group members and readers dial through the slow link; sends and
	// administrative requests do not.
	a, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings),
		kafka.WithTransport(nil, &kafkago.Dialer{DialFunc: dial, Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	var got [n]atomic.Int32
	chs := channels.Channels{}
	names := make([]string, n)
	for i := range n {
		names[i] = unique(fmt.Sprintf("start.ten.%d", i))
		chs[names[i]] = channels.On(func(context.Context, *channels.Message) error { got[i].Add(1); return nil })
	}
	l.Latency(200 * time.Millisecond)
	began := time.Now()
	channelstest.StartPlugin(t, a, &service{Name: "ten", Channels: chs}, channels.WithTimeouts(10*time.Second, 10*time.Second, 10*time.Second))
	t.Logf("started in %s", time.Since(began).Round(time.Millisecond))
	sender := startPlugin(t, nil)
	for _, ch := range names {
		if err := sender.SendToChannel(context.Background(), ch, "hello"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, "every channel consuming", func() bool {
		for i := range n {
			if got[i].Load() != 1 {
				return false
			}
		}
		return true
	})
	t.Logf("every channel consumed %s after the start began", time.Since(began).Round(time.Millisecond))
}

// TestTenBusyGroupsJoinAtOnce: a second member of 10 busy groups (each
// rebalance waits up to a second for the first member to notice it) starts
// without taking one rebalance after the other within its connect
// timeout: the joins run at once, off the connect deadline, and each group
// shares its partitions between both members.
func TestTenBusyGroupsJoinAtOnce(t *testing.T) {
	needKafka(t)
	const n = 10
	slow := timings
	slow.SessionTimeout, slow.HeartbeatInterval = 10*time.Second, time.Second // a rebalance is noticed within 1 s
	slow.Topic.Partitions = 2
	names := make([]string, n)
	for i := range n {
		names[i] = unique(fmt.Sprintf("start.busy.%d", i))
	}
	// schema counts the messages its member handles in handled.
	schema := func(handled *atomic.Int32) *service {
		chs := channels.Channels{}
		for _, name := range names {
			chs[name] = channels.Channel{Group: "busy", Handler: func(context.Context, *channels.Message) error {
				handled.Add(1)
				return nil
			}}
		}
		return &service{Name: "busy", Channels: chs}
	}
	var handledFirst, handledSecond atomic.Int32
	first, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(slow))
	if err != nil {
		t.Fatal(err)
	}
	sender := channelstest.StartPlugin(t, first, schema(&handledFirst))
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	members := func(ch string) int {
		res, err := client.DescribeGroups(context.Background(), &kafkago.DescribeGroupsRequest{GroupIDs: []string{kafka.GroupID("busy", ch)}})
		if err != nil || len(res.Groups) != 1 || res.Groups[0].GroupState != "Stable" {
			return -1
		}
		return len(res.Groups[0].Members)
	}
	eventually(t, 60*time.Second, "every group formed", func() bool {
		for _, ch := range names {
			if members(ch) != 1 {
				return false
			}
		}
		return true
	})
	second, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(slow))
	if err != nil {
		t.Fatal(err)
	}
	// Messages are sent to both partitions of every channel while the
	// second member starts: whichever member reads them (the first one
	// before it hands partitions over, the second from the first
	// assignment it awaited), none is skipped.
	const perPartition = 2
	sent := make(chan error, 1)
	go func() {
		defer close(sent)
		for _, ch := range names {
			for i := range 2 * perPartition {
				p := i % 2
				if err := sender.SendToChannel(context.Background(), ch, "m",
					channels.WithSendOptions(kafka.SendOptions{Partition: &p})); err != nil {
					sent <- err
					return
				}
			}
		}
	}()
	began := time.Now()
	logs := &logRec{}
	channelstest.StartPlugin(t, second, schema(&handledSecond), channels.WithTimeouts(10*time.Second, 10*time.Second, 10*time.Second),
		channels.WithLogger(slog.New(logs)))
	took := time.Since(began)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("the second member started in %s", took.Round(time.Millisecond))
	if took > 4*time.Second {
		t.Fatalf("the second member took %s to start: its joins ran one after the other", took)
	}
	eventually(t, 60*time.Second, "every group shared by both members", func() bool {
		for _, ch := range names {
			if members(ch) != 2 {
				return false
			}
		}
		return true
	})
	eventually(t, 60*time.Second, "every message sent during the start handled", func() bool {
		return handledFirst.Load()+handledSecond.Load() == n*2*perPartition
	})
	// The second member reads from the assignment it awaited: one
	// assignment per channel (no join of its own after Start), from which
	// it handles what is sent to its partitions.
	before := handledSecond.Load()
	for _, ch := range names {
		for p := range 2 {
			if err := sender.SendToChannel(context.Background(), ch, "m", channels.WithSendOptions(kafka.SendOptions{Partition: &p})); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, 30*time.Second, "the second member handling its partitions", func() bool {
		return handledSecond.Load()-before == n
	})
	if got := logs.count("partitions assigned"); got != n {
		t.Fatalf("the second member was assigned partitions %d times for %d channels", got, n)
	}
}
