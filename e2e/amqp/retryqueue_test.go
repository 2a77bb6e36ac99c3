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

// TestQuorumRetryQueueAtLeastOnce: the retry queue of a quorum group queue
// dead-letters at least once (x-dead-letter-strategy at-least-once with
// x-overflow reject-publish), as RabbitMQ lists its arguments: a retry
// whose TTL ended and that the group queue does not take stays in the
// retry queue instead of being dropped.
func TestQuorumRetryQueueAtLeastOnce(t *testing.T) {
	needAMQP(t)
	brokerenv.Need(t, "rabbitmqctl", func() error { _, err := rabbitmqctl("status"); return err })
	ch, group := unique("retryq.quorum"), "g"
	queue := group + "." + ch
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, retry}, []string{ch})
	var attempt2 atomic.Int64
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 1,
		Handler: func(_ context.Context, m *channels.Message) error {
			if m.Attempt == 1 {
				return errors.New("fails once")
			}
			attempt2.Add(1)
			return nil
		}}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the retry run", func() bool { return attempt2.Load() == 1 })
	out, err := rabbitmqctl("list_queues", "name", "arguments")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, retry+"\t") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("retry queue %q not listed in\n%s", retry, out)
	}
	for _, want := range []string{`{"x-queue-type","quorum"}`,
		`{"x-dead-letter-strategy","at-least-once"}`, `{"x-overflow","reject-publish"}`} {
		if !strings.Contains(line, want) {
			t.Errorf("retry queue arguments lack %s: %s", want, line)
		}
	}
}

// TestQuorumRetryQueueExistingWithoutAtLeastOnce: a quorum retry queue
// declared without at-least-once dead-lettering (by an earlier version) is
// used as it is: the retry runs.
func TestQuorumRetryQueueExistingWithoutAtLeastOnce(t *testing.T) {
	needAMQP(t)
	ch, group := unique("retryq.old"), "g"
	queue := group + "." + ch
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, retry}, []string{ch})
	if _, err := rawChannel(t, rawConn(t)).QueueDeclare(retry, true, false, false, false, amqp091.Table{
		"x-message-ttl": int64(50), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue,
		"x-expires": int64(600000), "x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	var attempt2 atomic.Int64
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 1,
		Handler: func(_ context.Context, m *channels.Message) error {
			if m.Attempt == 1 {
				return errors.New("fails once")
			}
			attempt2.Add(1)
			return nil
		}}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the retry run", func() bool { return attempt2.Load() == 1 })
}
