package amqp

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// cuttableDial dials RabbitMQ for an adapter and can cut the first
// connection it dialed (the publishing one: Connect dials it before any
// Subscribe) and refuse new dials until heal.
type cuttableDial struct {
	mu      sync.Mutex
	first   net.Conn
	refused bool
}

func (d *cuttableDial) dial(network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refused {
		return nil, errors.New("test: dial refused")
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err == nil && d.first == nil {
		d.first = c
	}
	return c, err
}

// cut closes the publishing connection and refuses the dials that would
// replace it.
func (d *cuttableDial) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refused = true
	_ = d.first.Close()
}

func (d *cuttableDial) heal() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refused = false
}

// TestSettleFailureNotCounted: while the publishing connection is down, a
// failed run's retry cannot be published; the message waits on the
// consumer for the connection instead of being requeued (each requeue
// raises a quorum queue's x-delivery-count, so an outage would use up its
// delivery budget and dead-letter a message that failed once). Once the
// connection is back, the message is handed back by a copy and runs again
// with the same attempt (its failed run's retry was never published), then
// its retry runs: three runs in all, nothing dead-lettered.
func TestSettleFailureNotCounted(t *testing.T) {
	needAMQP(t)
	ch, group := unique("settlefail"), "g"
	queue, dlq := group+"."+ch, ch+".DLQ"
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, dlq, retry}, []string{ch, dlq})
	d := &cuttableDial{}
	var runs, attempt2 atomic.Int64
	gate := make(chan struct{})
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 1, MaxDeliveries: 2,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler: func(_ context.Context, m *channels.Message) error {
			if runs.Add(1) == 1 {
				<-gate
			}
			if m.Attempt == 1 {
				return errors.New("fails once")
			}
			attempt2.Add(1)
			return nil
		}}}}, []chamqp.Option{chamqp.WithConfig(amqp091.Config{Dial: d.dial}),
		chamqp.WithReconnectBackoff(broker.ConstantBackoff(50 * time.Millisecond))})
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first run", func() bool { return runs.Load() == 1 })
	d.cut()
	close(gate)
	// Each requeue would be a redelivery (a second run) after
	// DefaultSettleFailureDelay: none may come while the connection is down.
	consistently(t, 4*chamqp.DefaultSettleFailureDelay, "no run while the publishing connection is down",
		func() bool { return runs.Load() == 1 })
	d.heal()
	eventually(t, 20*time.Second, "the retry run", func() bool { return attempt2.Load() == 1 })
	consistently(t, 500*time.Millisecond, "three runs", func() bool { return runs.Load() == 3 })
	q, err := rawChannel(t, rawConn(t)).QueueDeclarePassive(dlq, true, false, false, false, nil)
	if err != nil || q.Messages != 0 {
		t.Errorf("dead-letter queue %+v %v", q, err)
	}
}

// TestSettleFailureHandedBackAtStop: a member stopped while a failed run's
// retry waits for the publishing connection hands the message back by a
// copy once the connection is back, within the stop's deadline, instead of
// leaving it to the channel's close (a requeue, which a quorum queue
// counts as a delivery): the next member gets a message RabbitMQ never
// redelivered, with no x-delivery-count.
func TestSettleFailureHandedBackAtStop(t *testing.T) {
	needAMQP(t)
	ch, group := unique("settlefail.stop"), "g"
	queue, dlq := group+"."+ch, ch+".DLQ"
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, dlq, retry}, []string{ch, dlq})
	d := &cuttableDial{}
	var failed atomic.Int64
	gate := make(chan struct{})
	chOpts := func(h channels.Handler) channels.Channels {
		return channels.Channels{ch: {Group: group, MaxRetries: 1,
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: h}}
	}
	first, _ := startPlugin(t, &service{Name: "svc", Channels: chOpts(func(context.Context, *channels.Message) error {
		<-gate
		failed.Add(1)
		return errors.New("fails")
	})}, []chamqp.Option{chamqp.WithConfig(amqp091.Config{Dial: d.dial}),
		chamqp.WithReconnectBackoff(broker.ConstantBackoff(50 * time.Millisecond))})
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	d.cut()
	close(gate)
	eventually(t, 10*time.Second, "the failed run", func() bool { return failed.Load() == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		stopped <- first.Stop(ctx)
	}()
	d.heal()
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "svc", Channels: chOpts(got.Handle)}, nil)
	eventually(t, 10*time.Second, "the message run by the next member", func() bool { return got.Count() == 1 })
	dv, ok := got.All()[0].Raw.(*amqp091.Delivery)
	if !ok {
		t.Fatalf("raw %T", got.All()[0].Raw)
	}
	if _, counted := dv.Headers["x-delivery-count"]; counted || dv.Redelivered {
		t.Errorf("the message was requeued: redelivered %v, headers %v", dv.Redelivered, dv.Headers)
	}
}
