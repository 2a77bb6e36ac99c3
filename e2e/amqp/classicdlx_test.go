package amqp

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// classicWithDLX declares queue as a classic queue with a dead-letter
// exchange (RabbitMQ then refuses the adapter's quorum declaration naming
// x-dead-letter-exchange, not x-queue-type) and starts a member on it
// whose first run waits until the test ends; it returns the runs, the
// member's adapter and the dead-letter queue.
func classicWithDLX(t *testing.T, maxDeliveries int) (ch string, runs *atomic.Int64, a *chamqp.Adapter, dlq string) {
	t.Helper()
	needAMQP(t)
	brokerenv.Need(t, "rabbitmqctl", func() error { _, err := rabbitmqctl("status"); return err })
	ch, group := unique("classicdlx"), "g"
	queue := group + "." + ch
	dlq = ch + ".DLQ"
	cleanup(t, []string{queue, dlq}, []string{ch, dlq})
	if _, err := rawChannel(t, rawConn(t)).QueueDeclare(queue, true, false, false, false,
		amqp091.Table{"x-dead-letter-exchange": "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	runs = &atomic.Int64{}
	_, a = startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 4,
		MaxRetries: channels.NoRetries, MaxDeliveries: maxDeliveries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(ctx context.Context, _ *channels.Message) error {
			if runs.Add(1) == 1 {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}}}}, []chamqp.Option{chamqp.WithReconnectBackoff(broker.ConstantBackoff(100 * time.Millisecond))})
	return ch, runs, a, dlq
}

// dlqMessages counts the messages ready in dlq, on ch.
func dlqMessages(t *testing.T, ch *amqp091.Channel, dlq string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(dlq, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// TestExistingClassicQueueWithDLXCounted: a group queue that exists as a
// classic queue with a dead-letter exchange is known as classic, so the
// adapter counts its redeliveries itself: with MaxDeliveries 1, a message
// whose run was cut by a lost connection is dead-lettered on its
// redelivery (ErrMaxDeliveries) instead of running again, unbounded.
func TestExistingClassicQueueWithDLXCounted(t *testing.T) {
	ch, runs, a, dlq := classicWithDLX(t, 1)
	publishRaw(t, ch, amqp091.Publishing{MessageId: "poison", Body: []byte(`"p"`), DeliveryMode: amqp091.Persistent})
	eventually(t, 10*time.Second, "the first run", func() bool { return runs.Load() == 1 })
	closeConnection(t, a)
	raw := rawChannel(t, rawConn(t))
	eventually(t, 30*time.Second, "the dead letter", func() bool { return dlqMessages(t, raw, dlq) == 1 })
	if n := runs.Load(); n != 1 {
		t.Errorf("%d runs", n)
	}
}

// TestForgedDeliveryCountOnClassic: on a classic queue (one with a
// dead-letter exchange included) RabbitMQ does not own x-delivery-count,
// so a producer's value is not trusted: a message published with
// x-delivery-count 99 and redelivered once (its run cut by a lost
// connection) runs again instead of being dead-lettered as delivered 100
// times.
func TestForgedDeliveryCountOnClassic(t *testing.T) {
	ch, runs, a, dlq := classicWithDLX(t, 0)
	publishRaw(t, ch, amqp091.Publishing{MessageId: "forged", Headers: amqp091.Table{"x-delivery-count": int64(99)},
		Body: []byte(`"f"`), DeliveryMode: amqp091.Persistent})
	eventually(t, 10*time.Second, "the first run", func() bool { return runs.Load() == 1 })
	closeConnection(t, a)
	eventually(t, 30*time.Second, "the second run", func() bool { return runs.Load() == 2 })
	if n := dlqMessages(t, rawChannel(t, rawConn(t)), dlq); n != 0 {
		t.Errorf("%d dead letters", n)
	}
}
