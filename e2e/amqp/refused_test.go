package amqp

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
)

// TestDeadLetterRefusedBounded: a dead-letter queue that refuses every
// message (x-max-length 0, reject-publish: the publish is nacked) makes
// the adapter keep the message with its failure and the refusal count
// (x-error-dead-letter-refusals, stored faithfully by Keep), and the kit
// drops it once MaxDeliveries refusals were counted: the handler ran once,
// the group queue ends empty, nothing loops.
func TestDeadLetterRefusedBounded(t *testing.T) {
	needAMQP(t)
	ch, dlq := unique("refused.topic"), unique("refused.DLQ")
	queue := "g." + ch
	cleanup(t, []string{queue, dlq, chamqp.RetryQueueName(queue, chamqp.DefaultKeepDelay)}, []string{ch, dlq})
	var dropped atomic.Int64
	log := slog.New(countingHandler{texts: []string{"refused its dead-letter copy"}, n: &dropped})
	var runs atomic.Int64
	refusing := chamqp.ChannelOptions{DeadLetterQueue: chamqp.QueueOptions{
		Arguments: amqp091.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}}}
	p, _ := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g",
		MaxRetries: channels.NoRetries, MaxDeliveries: 2, AdapterOptions: []any{refusing},
		DeadLettering: &channels.DeadLettering{RefusalWindow: time.Second, Enabled: true, QueueName: dlq},
		Handler:       func(context.Context, *channels.Message) error { runs.Add(1); return errors.New("fails") }}}},
		nil, channels.WithLogger(log))
	if err := p.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the message dropped after its refusals", func() bool { return dropped.Load() == 1 })
	eventually(t, 5*time.Second, "the group queue empty", func() bool {
		q, err := rawChannel(t, rawConn(t)).QueueDeclarePassive(queue, true, false, false, false, nil)
		return err == nil && q.Messages == 0
	})
	consistently(t, 2*time.Second, "dropped once, run once", func() bool { return dropped.Load() == 1 && runs.Load() == 1 })
}
