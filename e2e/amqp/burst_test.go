package amqp

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// TestFailureBurst: a burst of 5,000 messages that all fail (one retry,
// then a dead letter each: 10,000 settling publishes) is settled without a
// settle timing out: no message is handed back (counted as unfinished) for
// lack of a publisher. CHANNELS_AMQP_BURST sets the size (default 5000).
func TestFailureBurst(t *testing.T) {
	needAMQP(t)
	total := 5000
	if os.Getenv("CHANNELS_AMQP_BURST") == "" && testing.Short() {
		total = 1000
	}
	ch, dlq := unique("burst.topic"), unique("burst.DLQ")
	cleanup(t, []string{"g." + ch, dlq}, []string{ch, dlq})
	var settleFailed atomic.Int64
	log := slog.New(countingHandler{texts: []string{"settling a message failed", "dead-letter publish failed"}, n: &settleFailed, show: t})
	var runs atomic.Int64
	p, _ := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{
		ch: {Group: "g", MaxInFlight: 200, MaxRetries: 1, Backoff: broker.ConstantBackoff(50 * time.Millisecond),
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
			Handler:       func(context.Context, *channels.Message) error { runs.Add(1); return errors.New("burst") }}}},
		nil, channels.WithLogger(log))
	snd, _ := startPlugin(t, nil, nil)
	batch := make([]channels.BatchItem, 500)
	for i := range batch {
		batch[i] = channels.BatchItem{Payload: i}
	}
	for sent := 0; sent < total; sent += len(batch) {
		if err := snd.SendBatch(context.Background(), ch, batch); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	raw := rawChannel(t, rawConn(t))
	eventually(t, 5*time.Minute, "every message dead-lettered", func() bool {
		q, err := raw.QueueDeclarePassive(dlq, true, false, false, false, nil)
		return err == nil && q.Messages >= total
	})
	took := time.Since(start)
	t.Logf("burst of %d failures: %d runs, all dead-lettered in %v (%.0f settles/s), %d settles failed",
		total, runs.Load(), took.Round(time.Millisecond), float64(2*total)/took.Seconds(), settleFailed.Load())
	if n := settleFailed.Load(); n != 0 {
		t.Errorf("%d settles failed in the burst", n)
	}
	_ = p
}
