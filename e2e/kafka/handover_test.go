package kafka

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// TestDrainTimeoutLeavesTheNextOwnerCareful: a stop whose deadline passes
// while a handler still runs (one that ignores its context) commits the
// partition's position without the clean mark, so that the partition's
// next owner counts the runs of what it reads first (a message still
// running when its member went may be the one that kills members).
func TestDrainTimeoutLeavesTheNextOwnerCareful(t *testing.T) {
	needKafka(t)
	ch, group := unique("handover.unclean"), "unclean-group"
	release := make(chan struct{})
	defer close(release)
	var running atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	a, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(opts))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "unclean", Channels: channels.Channels{ch: {Group: group,
		Handler: func(context.Context, *channels.Message) error {
			running.Add(1)
			<-release // ignores the stop
			return nil
		}}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.SendToChannel(context.Background(), ch, "hangs"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the handler running", func() bool { return running.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	began := time.Now()
	if err := p.Stop(ctx); err == nil {
		t.Fatal("the stop did not report the handler still running")
	}
	if took := time.Since(began); took > 1250*time.Millisecond {
		t.Fatalf("the stop with a 1 s deadline took %s", took)
	}
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	gid := kafka.GroupID(group, ch)
	eventually(t, 40*time.Second, "the member gone from the group", func() bool {
		res, err := client.DescribeGroups(context.Background(), &kafkago.DescribeGroupsRequest{GroupIDs: []string{gid}})
		return err == nil && len(res.Groups) == 1 && len(res.Groups[0].Members) == 0
	})
	res, err := client.OffsetFetch(context.Background(), &kafkago.OffsetFetchRequest{GroupID: gid, Topics: map[string][]int{ch: {0}}})
	if err != nil {
		t.Fatal(err)
	}
	if parts := res.Topics[ch]; len(parts) != 1 || parts[0].CommittedOffset != 0 || parts[0].Metadata == "clean" {
		t.Fatalf("committed %+v, want offset 0 without the clean mark", parts)
	}
}

// TestHandOverWaitGivesUpLeavesTheNextOwnerCareful: at a rebalance, a
// member gives up waiting for a handler that ignores its context (half of
// RebalanceTimeout less a HeartbeatInterval) and commits the partition
// without the clean mark, within the rebalance: the partition's next
// owner, whichever member the assignor picks, runs the message carefully,
// counting its run in the commit metadata (run:1).
func TestHandOverWaitGivesUpLeavesTheNextOwnerCareful(t *testing.T) {
	needKafka(t)
	ch, group := unique("handover.gaveup"), "gaveup-group"
	release := make(chan struct{})
	defer close(release)
	var runs atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	// The hand-over ends 3/4 of RebalanceTimeout after the rebalance is
	// noticed: 6 s leaves a loaded machine 1.5 s to rejoin.
	opts.RebalanceTimeout = 6 * time.Second
	// Two slots: when the assignor leaves the partition with the first
	// member, that member runs the message again beside the run that
	// ignores the rebalance (with one slot, that run would hold it).
	schema := &service{Name: "gaveup", Channels: channels.Channels{ch: {Group: group, AdapterOptions: []any{opts}, MaxInFlight: 2,
		Handler: func(context.Context, *channels.Message) error {
			runs.Add(1)
			<-release // ignores the rebalance
			return nil
		}}}}
	logs := &logRec{}
	member := func() *channels.Plugin {
		ad, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
		if err != nil {
			t.Fatal(err)
		}
		return channelstest.StartPlugin(t, ad, schema, channels.WithLogger(slog.New(logs)))
	}
	a := member()
	if err := a.SendToChannel(context.Background(), ch, "hangs"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the handler running", func() bool { return runs.Load() == 1 })
	first := logs.values("partitions assigned", "generation")
	if len(first) != 1 {
		t.Fatalf("generations %v before the rebalance, want one", first)
	}
	member() // a rebalance while the handler runs
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	gid := kafka.GroupID(group, ch)
	var meta string
	defer func() {
		if t.Failed() {
			t.Logf("last commit metadata %q, %d runs", meta, runs.Load())
		}
	}()
	eventually(t, 30*time.Second, "the run counted by the partition's next owner", func() bool {
		res, err := client.OffsetFetch(context.Background(), &kafkago.OffsetFetchRequest{GroupID: gid, Topics: map[string][]int{ch: {0}}})
		if err != nil || len(res.Topics[ch]) != 1 {
			return false
		}
		meta = res.Topics[ch][0].Metadata
		return meta == "run:1" && runs.Load() == 2
	})
	// The giving-up member's hand-over commit was accepted (made within
	// the rebalance, as a member of the ending generation), and it rejoined
	// in time: the group moved to the next generation once, and stays
	// there.
	if n := logs.count("committing offsets failed"); n != 0 {
		t.Fatalf("%d commits refused", n)
	}
	consistently(t, 3*time.Second, "one rebalance", func() bool {
		return len(logs.values("partitions assigned", "generation")) == 2
	})
	var gens []int
	for g := range logs.values("partitions assigned", "generation") {
		n, err := strconv.Atoi(g)
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, n)
	}
	if slices.Sort(gens); gens[1] != gens[0]+1 {
		t.Fatalf("generations %v, want two consecutive", gens)
	}
}

// TestNewGenerationKeepsTheRunCount: a partition committed with a run
// count (its previous owner died running the message there) keeps the
// count when a new member is assigned it, until the message runs again: a
// crash of the new member before that does not erase it.
func TestNewGenerationKeepsTheRunCount(t *testing.T) {
	needKafka(t)
	ch, group := unique("handover.runcount"), "runcount-group"
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: ch, NumPartitions: 1, ReplicationFactor: 1}}})
	if err == nil {
		err = res.Errors[ch]
	}
	if err != nil {
		t.Fatal(err)
	}
	gid := kafka.GroupID(group, ch)
	eventually(t, 20*time.Second, "the run count committed", func() bool {
		res, err := client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: gid, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{ch: {{Partition: 0, Offset: 0, Metadata: "run:2"}}}})
		return err == nil && res.Topics[ch][0].Error == nil
	})
	opts := timings
	opts.Topic.Partitions = 1
	startPlugin(t, &service{Name: "runcount", Channels: channels.Channels{ch: {Group: group, AdapterOptions: []any{opts},
		Handler: func(context.Context, *channels.Message) error { return nil }}}})
	eventually(t, 20*time.Second, "the member assigned the partition", func() bool {
		res, err := client.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{gid}})
		return err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "Stable" && len(res.Groups[0].Members) == 1
	})
	consistently(t, 2*time.Second, "the run count kept", func() bool {
		res, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: gid, Topics: map[string][]int{ch: {0}}})
		return err == nil && len(res.Topics[ch]) == 1 && res.Topics[ch][0].Metadata == "run:2"
	})
}

// TestRunCutByTheStopIsNotCounted: a careful run cut by the member's own
// stop (its handler returns with its context) is handed back, not counted:
// the partition is committed with the run count it came in with, so that
// stop after stop a slow healthy message is never given up for
// MaxDeliveries.
func TestRunCutByTheStopIsNotCounted(t *testing.T) {
	needKafka(t)
	ch, group := unique("handover.cut"), "cut-group"
	client := &kafkago.Client{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: ch, NumPartitions: 1, ReplicationFactor: 1}}})
	if err == nil {
		err = res.Errors[ch]
	}
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the message written", func() bool {
		res, err := client.Produce(ctx, &kafkago.ProduceRequest{Topic: ch, Partition: 0, RequiredAcks: kafkago.RequireAll,
			Records: kafkago.NewRecordReader(kafkago.Record{Value: kafkago.NewBytes([]byte(`"slow"`))})})
		return err == nil && res.Error == nil
	})
	gid := kafka.GroupID(group, ch)
	// Its previous owners died twice running it.
	eventually(t, 20*time.Second, "the run count committed", func() bool {
		res, err := client.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: gid, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{ch: {{Partition: 0, Offset: 0, Metadata: "run:2"}}}})
		return err == nil && res.Topics[ch][0].Error == nil
	})
	metadata := func() string {
		res, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: gid, Topics: map[string][]int{ch: {0}}})
		if err != nil || len(res.Topics[ch]) != 1 || res.Topics[ch][0].CommittedOffset != 0 {
			return ""
		}
		return res.Topics[ch][0].Metadata
	}
	opts := timings
	opts.Topic.Partitions = 1
	var runs atomic.Int32
	ad, err := kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(ad))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "cut", Channels: channels.Channels{ch: {Group: group, AdapterOptions: []any{opts},
		Handler: func(ctx context.Context, _ *channels.Message) error {
			runs.Add(1)
			<-ctx.Done() // slow: cut by the stop
			return ctx.Err()
		}}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the run counted", func() bool { return runs.Load() == 1 && metadata() == "run:3" })
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	_ = p.Stop(sctx) // the deadline passes with the handler running
	eventually(t, 10*time.Second, "the cut run no longer counted", func() bool { return metadata() == "run:2" })
}
