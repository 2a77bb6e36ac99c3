package amqp

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
)

// TestQuorumQueue: a channel on a quorum queue (declared through
// ChannelOptions) retries through the retry queue like a classic one: the
// copy is dead-lettered back into the quorum queue as attempt 2, and the
// queue ends empty.
func TestQuorumQueue(t *testing.T) {
	needAMQP(t)
	ch, group := unique("quorum.topic"), "qg"
	cleanup(t, []string{group + "." + ch}, []string{ch})
	quorum := chamqp.ChannelOptions{Queue: chamqp.QueueOptions{Arguments: amqp091.Table{"x-queue-type": "quorum"}}}
	var mu sync.Mutex
	var attempts []int
	failed := false
	startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxRetries: 2,
		AdapterOptions: []any{quorum},
		Handler: func(_ context.Context, m *channels.Message) error {
			mu.Lock()
			defer mu.Unlock()
			attempts = append(attempts, m.Attempt)
			if !failed {
				failed = true
				return errors.New("once")
			}
			return nil
		}}}}, nil)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "two runs", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if attempts[0] != 1 || attempts[1] != 2 {
		t.Fatalf("attempts %v", attempts)
	}
	raw := rawChannel(t, rawConn(t))
	q, err := raw.QueueDeclarePassive(group+"."+ch, true, false, false, false, amqp091.Table{"x-queue-type": "quorum"})
	if err != nil || q.Messages != 0 {
		t.Fatalf("queue %+v %v", q, err)
	}
}
