package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/kafka"
)

// TestRebalanceKeepsTheMemberOfASlowHandler: a member joins while a handler
// of the group runs longer than SessionTimeout (2 s). The member running it
// waits for it before handing its partitions over, and keeps heartbeating
// meanwhile: it is not expelled, its commit is taken, and the message runs
// once in all.
func TestRebalanceKeepsTheMemberOfASlowHandler(t *testing.T) {
	needKafka(t)
	ch, group := unique("rebalance.slow"), unique("rebalance-group")
	var slowRuns, markers atomic.Int32
	handler := func(ctx context.Context, m *channels.Message) error {
		switch string(m.Payload) {
		case `"slow"`:
			slowRuns.Add(1)
			return channelstest.SimulateWork(ctx, 3*timings.SessionTimeout)
		case `"marker"`:
			markers.Add(1)
		}
		return nil
	}
	schema := func() *service {
		return &service{Name: "rebalance", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 1, Handler: handler}}}
	}
	a := startPlugin(t, schema())
	if err := a.SendToChannel(context.Background(), ch, "slow"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the slow message running", func() bool { return slowRuns.Load() == 1 })
	startPlugin(t, schema()) // joins: a rebalance while the slow handler runs
	if err := a.SendToChannel(context.Background(), ch, "marker"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the group consuming again after the rebalance", func() bool { return markers.Load() >= 1 })
	consistently(t, 2*timings.SessionTimeout, "the slow message run once", func() bool { return slowRuns.Load() == 1 })
}

// TestStopHandsOverWaitingRetryCopies: a retry copy waiting for its backoff
// when its member stops is published again and settled, so the stop commits
// past it: the next member runs the retry, and none of the messages the
// first member processed after the copy a second time.
func TestStopHandsOverWaitingRetryCopies(t *testing.T) {
	needKafka(t)
	ch, group := unique("handover.retry"), unique("handover-group")
	var mu sync.Mutex
	runs := map[string]int{}
	ran := func(s string) int { mu.Lock(); defer mu.Unlock(); return runs[s] }
	handler := func(ctx context.Context, m *channels.Message) error {
		var s string
		if err := m.Decode(&s); err != nil {
			return err
		}
		mu.Lock()
		runs[s]++
		n := runs[s]
		mu.Unlock()
		if s == "fails" && n == 1 {
			return errors.New("the first run fails")
		}
		return nil
	}
	schema := &service{Name: "handover", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 4,
		Backoff: broker.ConstantBackoff(4 * time.Second), Handler: handler,
		AdapterOptions: []any{kafka.ChannelOptions{Topic: kafka.TopicOptions{Partitions: 1}}}}}}
	a := startPlugin(t, schema)
	if err := a.SendToChannel(context.Background(), ch, "fails"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the first run failed", func() bool { return ran("fails") == 1 })
	// Sent after the retry copy (most of them at least): read and processed
	// while the copy waits for its backoff.
	const n = 20
	for i := range n {
		if err := a.SendToChannel(context.Background(), ch, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "every message processed once", func() bool {
		for i := range n {
			if ran(fmt.Sprintf("m%d", i)) != 1 {
				return false
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if ran("fails") != 1 {
		t.Fatalf("the retry ran before its backoff ended (%d runs)", ran("fails"))
	}
	startPlugin(t, schema)
	eventually(t, 30*time.Second, "the retry run by the next member", func() bool { return ran("fails") == 2 })
	consistently(t, time.Second, "no message run again", func() bool {
		for i := range n {
			if ran(fmt.Sprintf("m%d", i)) != 1 {
				return false
			}
		}
		return ran("fails") == 2
	})
}
