package jetstream_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
	"github.com/microchannels/channels/jetstream"
)

// On a slow link (150 ms each way) the failure records of a batch of
// redelivered messages are read while every message of the batch is
// already reported in progress, and concurrently: with AckWait 1 s none of
// them is redelivered while it waits (each message runs exactly twice: a
// failure, then a success).
func TestSlowRecordReadsKeepBatchInProgress(t *testing.T) {
	url, _ := startServer(t)
	l := linkfault.New(t, strings.TrimPrefix(url, "nats://"))
	o := jetstream.ChannelOptions{AckWait: time.Second, FetchTimeout: time.Second}
	var mu sync.Mutex
	runs := map[string]int{}
	handler := func(ctx context.Context, m *channels.Message) error {
		mu.Lock()
		runs[m.ID]++
		n := runs[m.ID]
		mu.Unlock()
		if n == 1 {
			return errors.New("first run fails")
		}
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil
	}
	startPlugin(t, newAdapter(t, "nats://"+l.Addr(), o), &service{Name: "slow", Channels: channels.Channels{"slow.topic": {
		Group: "g", MaxInFlight: 8, MaxRetries: 3, Backoff: broker.ConstantBackoff(500 * time.Millisecond), Handler: handler}}})
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	l.Latency(150 * time.Millisecond)
	items := make([]int, 8)
	if err := snd.SendBatch(context.Background(), "slow.topic", channels.BatchOf(items...)); err != nil {
		t.Fatal(err)
	}
	total := func() (sum, most int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range runs {
			sum += n
			most = max(most, n)
		}
		return
	}
	eventually(t, 20*time.Second, "every message ran twice", func() bool { s, _ := total(); return s >= 16 })
	consistently(t, 2*time.Second, "no third run", func() bool { _, m := total(); return m <= 2 })
}
