package amqp

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
)

// TestRecountRefusedRuns: a message a classic group queue redelivers is
// counted by a copy, but a foreign producer's headers leave no room in the
// adapter's frame_max for the count: the copy is refused, and handing the
// message back would be refused the same way (its requeue was redelivered
// and recounted forever, never run). It runs with the count kept in
// memory, once, and leaves the queue.
func TestRecountRefusedRuns(t *testing.T) {
	needAMQP(t)
	ch, group := unique("recount.big"), "g"
	queue := group + "." + ch
	cleanup(t, []string{queue}, []string{ch})
	raw := rawChannel(t, rawConn(t))
	if _, err := raw.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	const frameMax = 8192
	// The content header takes the whole frame but 25 bytes (see
	// contentHeaderBytes): the recount's two headers do not fit.
	big := strings.Repeat("x", frameMax-8-25-32)
	if err := raw.PublishWithContext(context.Background(), "", queue, false, false, amqp091.Publishing{
		MessageId: "m1", Headers: amqp091.Table{"big": big}, Body: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	// Delivered once and requeued: RabbitMQ redelivers it (redelivered set).
	var d amqp091.Delivery
	eventually(t, 10*time.Second, "the message in the queue", func() bool {
		got, ok, err := raw.Get(queue, false)
		d = got
		return ok && err == nil
	})
	if err := d.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group,
		Handler: func(context.Context, *channels.Message) error { runs.Add(1); return nil }}}},
		[]chamqp.Option{chamqp.WithQueueType(chamqp.QueueClassic), chamqp.WithConfig(amqp091.Config{FrameSize: frameMax})})
	eventually(t, 15*time.Second, "the redelivered message run", func() bool { return runs.Load() == 1 })
	eventually(t, 10*time.Second, "the group queue empty", func() bool {
		q, err := raw.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err == nil && q.Messages == 0
	})
	consistently(t, 3*chamqp.DefaultSettleFailureDelay, "one run", func() bool { return runs.Load() == 1 })
}
