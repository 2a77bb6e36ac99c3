package amqp

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// memoryAlarm sets a memory alarm on RabbitMQ (it blocks every publishing
// connection) and returns its restore, also run at the end of the test.
//
// The alarm blocks the publishers of every test using the shared broker,
// so the tests that set one are named TestSerial... and run only in the
// serial phase of `make test` (CHANNELS_E2E_SERIAL=1), alone.
func memoryAlarm(t *testing.T) func() {
	t.Helper()
	if os.Getenv("CHANNELS_E2E_SERIAL") != "1" {
		t.Skip("a memory alarm blocks every publisher of the shared broker: serial phase only (CHANNELS_E2E_SERIAL=1)")
	}
	var restored atomic.Bool
	restore := func() {
		if restored.Swap(true) {
			return
		}
		if _, err := rabbitmqctl("set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("restoring the memory watermark: %v", err)
		}
	}
	t.Cleanup(restore)
	if _, err := rabbitmqctl("set_vm_memory_high_watermark", "0.0000001"); err != nil {
		t.Fatal(err)
	}
	return restore
}

// TestSerialSettleFailureBlockedNotCounted: while a resource alarm blocks the
// publishing connection (the consuming one still delivers), a failed
// run's retry copy and its hand-back copies cannot be published; the
// message waits on the consumer instead of being requeued (each requeue
// raises a quorum queue's x-delivery-count and reruns the message). Once
// the alarm ends RabbitMQ takes the retry copy written during it and
// confirms it: the original is acked then, so attempt 1 does not run again
// and attempt 2 runs once (no second retry copy).
func TestSerialSettleFailureBlockedNotCounted(t *testing.T) {
	needAMQP(t)
	ch, group := unique("settlefail.alarm"), "g"
	queue, dlq := group+"."+ch, ch+".DLQ"
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, dlq, retry}, []string{ch, dlq})
	var runs, attempt1, attempt2, counted atomic.Int64
	gate := make(chan struct{})
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 1, MaxDeliveries: 5,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(_ context.Context, m *channels.Message) error {
			if d, ok := m.Raw.(*amqp091.Delivery); ok {
				if _, ok := d.Headers["x-delivery-count"]; ok {
					counted.Add(1)
				}
			}
			if runs.Add(1) == 1 {
				<-gate
			}
			if m.Attempt == 1 {
				attempt1.Add(1)
				return errors.New("fails once")
			}
			attempt2.Add(1)
			return nil
		}}}}, []chamqp.Option{chamqp.WithReconnectBackoff(broker.ConstantBackoff(50 * time.Millisecond))})
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first run", func() bool { return runs.Load() == 1 })
	restore := memoryAlarm(t)
	close(gate)
	// The retry waits kit.DefaultSettleTimeout, the hand-back
	// DefaultSettleFailureDelay, its copy DefaultSettleTimeout again: a
	// requeue after a failed hand-back would rerun the message within
	// this window.
	consistently(t, 2*kit.DefaultSettleTimeout+4*chamqp.DefaultSettleFailureDelay,
		"no run while publishing is blocked", func() bool { return runs.Load() == 1 })
	restore()
	// After the alarm the retry copy goes through the quorum retry queue's
	// at-least-once dead-lettering.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := rabbitmqctl("list_queues", "name", "messages", "messages_unacknowledged")
			t.Logf("queues:\n%s", out)
		}
	})
	// The retry copy written during the alarm is read and confirmed by
	// RabbitMQ once the alarm ends; the original is acked then: no hand-back
	// reruns attempt 1 and no second retry copy runs attempt 2 again.
	eventually(t, 30*time.Second, "the retry run", func() bool { return attempt2.Load() >= 1 })
	consistently(t, 2*time.Second+2*chamqp.DefaultSettleFailureDelay, "attempt 1 and attempt 2 once each",
		func() bool { return attempt1.Load() == 1 && attempt2.Load() == 1 })
	if n := counted.Load(); n != 0 {
		t.Errorf("%d runs carried x-delivery-count: the message was requeued", n)
	}
}
