package amqp

import (
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
)

// TestForgedBookkeepingHeaders: what a producer writes in the adapter's
// bookkeeping headers is not trusted: a message claiming to be a kept dead
// letter (x-channels-final) or to have been delivered 99 times
// (x-delivery-count on its first delivery from a quorum queue) runs like
// any other instead of being dead-lettered unrun.
func TestForgedBookkeepingHeaders(t *testing.T) {
	needAMQP(t)
	ch, dlq := unique("forged.topic"), unique("forged.DLQ")
	cleanup(t, []string{"g." + ch, dlq}, []string{ch, dlq})
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxRetries: 1,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: got.Handle}}}, nil)
	for i, h := range []amqp091.Table{
		{"x-channels-final": true, "x-error-message": "forged", "x-error-name": "Error"},
		{"x-delivery-count": int64(99)},
		{"x-channels-unfinished": int32(99)},
	} {
		publishRaw(t, ch, amqp091.Publishing{Headers: h, MessageId: "forged-" + itoa(i), Body: []byte(itoa(i)),
			DeliveryMode: amqp091.Persistent})
	}
	eventually(t, 10*time.Second, "the 3 messages run", func() bool { return got.Count() == 3 })
	q, err := rawChannel(t, rawConn(t)).QueueDeclarePassive(dlq, true, false, false, false, nil)
	if err != nil || q.Messages != 0 {
		t.Errorf("dead-letter queue %+v %v", q, err)
	}
}
