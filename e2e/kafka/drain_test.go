package kafka

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// TestRebalanceDuringADrainWaitsForTheHandlers: a rebalance while a member
// drains waits for the running handlers as the drain does (within the
// drain's deadline): the message running is settled by its member and
// never run again by the partition's next owner.
func TestRebalanceDuringADrainWaitsForTheHandlers(t *testing.T) {
	needKafka(t)
	ch, group := unique("drain.rebalance"), "drain-rebalance-group"
	release := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	var runs atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	handler := func(context.Context, *channels.Message) error {
		if runs.Add(1) == 1 {
			<-release // the drain and the rebalance wait for it
		}
		return nil
	}
	schema := &service{Name: "drainreb", Channels: channels.Channels{ch: {Group: group, AdapterOptions: []any{opts}, Handler: handler}}}
	a, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(schema); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.SendToChannel(context.Background(), ch, "slow"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the handler running", func() bool { return runs.Load() == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		stopped <- p.Stop(ctx)
	}()
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	gid := kafka.GroupID(group, ch)
	// The second member's start waits for the rebalance, which waits for
	// the handler: it starts aside.
	b, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	second, err := channels.New(channels.WithAdapter(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Register(schema); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- second.Start(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = second.Stop(ctx)
	}()
	eventually(t, 30*time.Second, "the rebalance under way", func() bool {
		res, err := client.DescribeGroups(context.Background(), &kafkago.DescribeGroupsRequest{GroupIDs: []string{gid}})
		return err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "PreparingRebalance"
	})
	consistently(t, 2*time.Second, "the running message left to its member", func() bool { return runs.Load() == 1 })
	close(release)
	released = true
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("the drain: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the drain did not end")
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the second member alone in the group", func() bool {
		res, err := client.DescribeGroups(context.Background(), &kafkago.DescribeGroupsRequest{GroupIDs: []string{gid}})
		return err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "Stable" && len(res.Groups[0].Members) == 1
	})
	consistently(t, 2*time.Second, "the message run once", func() bool { return runs.Load() == 1 })
}

// TestDrainBoundsARebalanceBegunBefore: a rebalance under way when a drain
// begins waits for the running handlers no longer than the drain's
// deadline: the member then hands the partition over and leaves, and the
// next owner runs the message cut by the stop, long before the rebalance's
// own wait for the handler would have ended.
func TestDrainBoundsARebalanceBegunBefore(t *testing.T) {
	needKafka(t)
	ch, group := unique("drain.before"), "drain-before-group"
	release := make(chan struct{})
	defer close(release)
	var runs atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	// The hand-over of a rebalance waits up to RebalanceTimeout/2 less a
	// heartbeat for the running handlers: 20 s here.
	opts.RebalanceTimeout = 40 * time.Second
	handler := func(context.Context, *channels.Message) error {
		if runs.Add(1) == 1 {
			<-release // ignores its context: only the wait's bounds end the hand-over
		}
		return nil
	}
	schema := &service{Name: "drainbefore", Channels: channels.Channels{ch: {Group: group, AdapterOptions: []any{opts}, Handler: handler}}}
	newPlugin := func() *channels.Plugin {
		a, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
		if err != nil {
			t.Fatal(err)
		}
		p, err := channels.New(channels.WithAdapter(a))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Register(schema); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := newPlugin()
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := first.SendToChannel(context.Background(), ch, "slow"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the handler running", func() bool { return runs.Load() == 1 })
	second := newPlugin()
	started := make(chan error, 1)
	go func() { started <- second.Start(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = second.Stop(ctx)
	}()
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	gid := kafka.GroupID(group, ch)
	eventually(t, 30*time.Second, "the rebalance under way", func() bool {
		res, err := client.DescribeGroups(context.Background(), &kafkago.DescribeGroupsRequest{GroupIDs: []string{gid}})
		return err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "PreparingRebalance"
	})
	// The first member's hand-over now waits for the handler.
	consistently(t, 2*time.Second, "the running message left to its member", func() bool { return runs.Load() == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stopped <- first.Stop(ctx)
	}()
	eventually(t, 10*time.Second, "the next owner running the message cut by the stop", func() bool { return runs.Load() == 2 })
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	<-stopped
}
