package kafka

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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
