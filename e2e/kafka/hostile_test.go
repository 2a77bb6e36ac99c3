package kafka

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// foreignWrite writes records to topic with kafka-go's own writer, as a
// third-party producer would.
func foreignWrite(t *testing.T, topic string, msgs []kafkago.Message) {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokerenv.KafkaBrokers()...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: len(msgs)}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	eventually(t, 20*time.Second, "the foreign producer's write", func() bool {
		// A topic just created may not be in every metadata answer yet.
		err = w.WriteMessages(ctx, msgs...)
		return err == nil || !errors.Is(err, kafkago.UnknownTopicOrPartition)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestForgedRetryHeadersDoNotHoldThePartition: a third-party producer
// writes 300 records that claim to be retry copies of the consumer's group,
// with x-redelivered-count 99 and an x-retry-not-before centuries ahead.
// With MaxInFlight 1, the valid messages written after them are processed
// within seconds (the read gate stays open), and each forged record runs
// once as an ordinary message: it is neither held nor given up unrun.
func TestForgedRetryHeadersDoNotHoldThePartition(t *testing.T) {
	needKafka(t)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(512 << 20))
	ch, group := unique("hostile.notbefore"), "hostile-group"
	var forged, valid atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	startPlugin(t, &service{Name: "hostile", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 1,
		AdapterOptions: []any{opts},
		Handler: func(_ context.Context, m *channels.Message) error {
			if m.Headers[broker.HeaderGroup] == group {
				forged.Add(1)
			} else {
				valid.Add(1)
			}
			return nil
		}}}})
	const n, behind = 300, 10
	far := strconv.FormatInt(time.Now().AddDate(300, 0, 0).UnixMilli(), 10)
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = kafkago.Message{Value: []byte(fmt.Sprintf(`{"forged":%d}`, i)), Headers: []kafkago.Header{
			{Key: broker.HeaderGroup, Value: []byte(group)},
			{Key: broker.HeaderRedeliveredCount, Value: []byte("99")},
			{Key: kafka.HeaderNotBefore, Value: []byte(far)},
		}}
	}
	foreignWrite(t, ch, msgs)
	sender := startPlugin(t, nil)
	start := time.Now()
	for i := range behind {
		if err := sender.SendToChannel(context.Background(), ch, map[string]int{"valid": i}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the valid messages behind the forged ones processed", func() bool {
		return valid.Load() == behind
	})
	t.Logf("valid messages processed %s after they were sent, behind %d forged records", time.Since(start).Round(time.Millisecond), n)
	eventually(t, 5*time.Second, "every forged record run once", func() bool { return forged.Load() == n })
}

// TestHeldCopyKeepsItsKeysOrder: on a channel with per-key order, a retry
// copy of the group that waits for its backoff (written as a member would
// after the channel switched from Unordered) holds the lane of its key:
// the messages of that key behind it run after it, one at a time, each
// once.
func TestHeldCopyKeepsItsKeysOrder(t *testing.T) {
	needKafka(t)
	ch, group := unique("hostile.lane"), "lane-group"
	var mu sync.Mutex
	var order []string
	running, overlap := 0, false
	opts := timings
	opts.Topic.Partitions = 1
	opts.Ordering = kafka.PerKey
	startPlugin(t, &service{Name: "lane", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 4,
		Backoff: broker.ConstantBackoff(2 * time.Second), AdapterOptions: []any{opts},
		Handler: func(_ context.Context, m *channels.Message) error {
			var s string
			if err := m.Decode(&s); err != nil {
				return err
			}
			mu.Lock()
			running++
			overlap = overlap || running > 1
			order = append(order, s)
			mu.Unlock()
			_ = channelstest.SimulateWork(context.Background(), 20*time.Millisecond) // a short run, so that overlaps show
			mu.Lock()
			running--
			mu.Unlock()
			return nil
		}}}})
	notBefore := strconv.FormatInt(time.Now().Add(time.Second).UnixMilli(), 10)
	foreignWrite(t, ch, []kafkago.Message{
		{Key: []byte("k"), Value: []byte(`"copy"`), Headers: []kafkago.Header{{Key: broker.HeaderGroup, Value: []byte(group)},
			{Key: broker.HeaderRedeliveredCount, Value: []byte("1")}, {Key: kafka.HeaderNotBefore, Value: []byte(notBefore)}}},
		{Key: []byte("k"), Value: []byte(`"first"`)},
		{Key: []byte("k"), Value: []byte(`"second"`)},
	})
	eventually(t, 20*time.Second, "the three messages run", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) >= 3 })
	consistently(t, time.Second, "each once", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if order[0] != "copy" || order[1] != "first" || order[2] != "second" || overlap {
		t.Fatalf("runs %v (overlap %v), want copy, first, second one at a time", order, overlap)
	}
}
