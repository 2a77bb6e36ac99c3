package amqp

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// equivalent reports whether queue exists with exactly args (a
// declaration with other arguments fails with PRECONDITION_FAILED).
func equivalent(t *testing.T, queue string, args amqp091.Table) error {
	t.Helper()
	_, err := rawChannel(t, rawConn(t)).QueueDeclare(queue, true, false, false, false, args)
	return err
}

// failOnce fails the first run of each message.
func failOnce(runs *atomic.Int64) channels.Handler {
	return func(_ context.Context, m *channels.Message) error {
		runs.Add(1)
		if m.Attempt == 1 {
			return errors.New("once")
		}
		return nil
	}
}

// TestGroupQueueQuorumByDefault: a new group queue is a quorum queue with
// x-delivery-limit = MaxDeliveries and the dead-letter queue's exchange as
// its dead-letter exchange, dead-lettering at least once
// (x-dead-letter-strategy at-least-once, x-overflow reject-publish); its
// retry queues are quorum queues too, dead-lettering at least once.
func TestGroupQueueQuorumByDefault(t *testing.T) {
	needAMQP(t)
	ch, group := unique("qtype.default"), "g"
	queue, dlq := group+"."+ch, ch+".DLQ"
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, dlq, retry}, []string{ch, dlq})
	var runs atomic.Int64
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 2,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: failOnce(&runs)}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two runs", func() bool { return runs.Load() == 2 })
	if err := equivalent(t, queue, amqp091.Table{"x-queue-type": "quorum", "x-delivery-limit": int64(2 + 1 + 5),
		"x-dead-letter-exchange": dlq, "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}); err != nil {
		t.Errorf("group queue: %v", err)
	}
	if err := equivalent(t, retry, amqp091.Table{"x-queue-type": "quorum", "x-message-ttl": int64(50),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue, "x-expires": int64(600000),
		"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}); err != nil {
		t.Errorf("retry queue: %v", err)
	}
}

// TestExistingClassicQueueKept: a group queue that exists as a classic
// queue (an earlier version, a Node member) is used as it is, and so are
// its retry queues: nothing fails, retries work. With QueueType quorum set
// explicitly, Start fails with a clear error instead.
func TestExistingClassicQueueKept(t *testing.T) {
	needAMQP(t)
	ch, group := unique("qtype.classic"), "g"
	queue := group + "." + ch
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, retry}, []string{ch})
	if _, err := rawChannel(t, rawConn(t)).QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 2, Handler: failOnce(&runs)}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two runs", func() bool { return runs.Load() == 2 })
	if err := equivalent(t, queue, amqp091.Table{"x-queue-type": "classic"}); err != nil {
		t.Errorf("group queue: %v", err)
	}
	if err := equivalent(t, retry, amqp091.Table{"x-queue-type": "classic", "x-message-ttl": int64(50),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue, "x-expires": int64(600000)}); err != nil {
		t.Errorf("retry queue: %v", err)
	}

	a, err := chamqp.New(brokerenv.AMQPURL(), chamqp.WithQueueType(chamqp.QueueQuorum))
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "explicit", Channels: channels.Channels{ch: {Group: group, Handler: failOnce(&runs)}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = p.Start(ctx)
	defer func() { _ = p.Stop(ctx) }()
	if err == nil || !strings.Contains(err.Error(), "exists with other arguments") {
		t.Fatalf("Start with QueueType quorum on a classic queue: %v", err)
	}
}

// TestExistingQuorumQueueAtMostOnce: a quorum group queue declared before
// the adapter dead-lettered at least once (without x-dead-letter-strategy
// and x-overflow) is used as it is, as a quorum queue, even with QueueType
// quorum set explicitly: the member starts and runs messages, and the
// queue keeps its arguments.
func TestExistingQuorumQueueAtMostOnce(t *testing.T) {
	needAMQP(t)
	ch, group := unique("qtype.amo"), "g"
	queue, dlq := group+"."+ch, ch+".DLQ"
	cleanup(t, []string{queue, dlq, chamqp.RetryQueueName(queue, 50*time.Millisecond)}, []string{ch, dlq})
	old := amqp091.Table{"x-queue-type": "quorum", "x-delivery-limit": int64(1 + 1 + 5), "x-dead-letter-exchange": dlq}
	if _, err := rawChannel(t, rawConn(t)).QueueDeclare(queue, true, false, false, false, old); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 1,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: failOnce(&runs)}}},
		[]chamqp.Option{chamqp.WithQueueType(chamqp.QueueQuorum)})
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two runs", func() bool { return runs.Load() == 2 })
	if err := equivalent(t, queue, old); err != nil {
		t.Errorf("group queue: %v", err)
	}
}
