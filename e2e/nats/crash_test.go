package nats

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream"
)

// TestMain runs the consumer child process when the test binary is
// re-executed by TestRedeliveryAfterKill.
func TestMain(m *testing.M) { channelstest.ChildMain(m, runChild) }

// runChild consumes channel|group and blocks in the handler forever, after
// printing STARTED: the parent kills it there.
func runChild(spec string) int {
	parts := strings.SplitN(spec, "|", 2)
	a, err := jetstream.New(natsURL(), jetstream.WithChannelOptions(timings))
	if err != nil {
		return 2
	}
	p, err := channels.New(channels.WithAdapter(a), channels.WithNodeID("crash-child"),
		channels.WithMaxRetries(channels.NoRetries))
	if err != nil {
		return 2
	}
	s := &service{Name: "crash", Channels: channels.Channels{parts[0]: {Group: parts[1], MaxInFlight: 3,
		Handler: func(ctx context.Context, m *channels.Message) error {
			os.Stdout.WriteString("STARTED " + m.ID + "\n")
			select {} // never acks
		}}}}
	if err := p.Register(s); err != nil {
		return 2
	}
	if err := p.Start(context.Background()); err != nil {
		return 2
	}
	os.Stdout.WriteString("READY\n")
	select {}
}

// TestRedeliveryAfterKill: a consumer killed (kill -9) during its handler
// runs uses up no attempt: with NoRetries, every message comes back to
// another member of the group, as attempt 1, once AckWait has passed;
// nothing is lost or dead-lettered.
func TestRedeliveryAfterKill(t *testing.T) {
	needNATS(t)
	ch, group, dlq := unique("crash.topic"), unique("crash-group"), unique("crash.DLQ")
	child := channelstest.StartChild(t, ch+"|"+group)
	child.WaitLine(t, "READY")
	sender := startPlugin(t, timings, nil)
	const n = 5 // 3 running in the child (MaxInFlight 3), 2 waiting in the stream
	for i := range n {
		if err := sender.SendToChannel(context.Background(), ch, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	ran := map[string]bool{}
	for range 3 {
		ran[strings.TrimPrefix(child.WaitLine(t, "STARTED "), "STARTED ")] = true
	}
	child.Kill(t)

	var mu sync.Mutex
	got := map[string]*channels.Message{}
	dead := &rec{}
	startPlugin(t, timings, &service{Name: "crash", Channels: channels.Channels{
		ch: {Group: group, MaxInFlight: 3, MaxRetries: channels.NoRetries,
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
			Handler: func(ctx context.Context, m *channels.Message) error {
				mu.Lock()
				got[m.ID] = m
				mu.Unlock()
				return nil
			}},
		dlq: channels.On(dead.handle),
	}}, channels.WithNodeID("crash-survivor"))
	eventually(t, 15*time.Second, "every message delivered again", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == n })
	consistently(t, time.Second, "nothing more, nothing dead-lettered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n && dead.count() == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for id, m := range got {
		if m.Attempt != 1 {
			t.Errorf("message %s (ran in the killed child: %v) came back as attempt %d, want 1", id, ran[id], m.Attempt)
		}
	}
	for id := range ran {
		if got[id] == nil {
			t.Errorf("message %s, running when the child was killed, was not delivered again", id)
		}
	}
}
