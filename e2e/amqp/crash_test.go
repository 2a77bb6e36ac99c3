package amqp

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestMain runs the consumer child process when the test binary is
// re-executed by the crash tests.
func TestMain(m *testing.M) { channelstest.ChildMain(m, runChild) }

// runChild consumes channel|group|maxInFlight with NoRetries and blocks in
// the handler forever, after printing STARTED <id> <attempt>: the parent
// kills it there.
func runChild(spec string) int {
	parts := strings.SplitN(spec, "|", 4)
	mif, _ := strconv.Atoi(parts[2])
	maxDeliveries, _ := strconv.Atoi(parts[3])
	a, err := chamqp.New(brokerenv.AMQPURL())
	if err != nil {
		os.Stderr.WriteString(err.Error())
		return 2
	}
	p, err := channels.New(channels.WithAdapter(a), channels.WithNodeID("crash-child"))
	if err != nil {
		os.Stderr.WriteString(err.Error())
		return 2
	}
	var once sync.Once
	s := &service{Name: "crash", Channels: channels.Channels{parts[0]: {Group: parts[1], MaxInFlight: mif, MaxRetries: channels.NoRetries, MaxDeliveries: maxDeliveries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: parts[0] + ".DLQ"},
		Handler: func(ctx context.Context, m *channels.Message) error {
			once.Do(func() { os.Stdout.WriteString("STARTED " + m.ID + " " + strconv.Itoa(m.Attempt) + "\n") })
			select {} // never acks
		}}}}
	if err := p.Register(s); err != nil {
		os.Stderr.WriteString(err.Error())
		return 2
	}
	if err := p.Start(context.Background()); err != nil {
		os.Stderr.WriteString(err.Error())
		return 2
	}
	os.Stdout.WriteString("READY\n")
	select {}
}

// startChild starts a consumer process of the test binary and waits until
// it consumes.
func startChild(t *testing.T, ch, group string, mif, maxDeliveries int) *channelstest.Child {
	t.Helper()
	c := channelstest.StartChild(t, ch+"|"+group+"|"+strconv.Itoa(mif)+"|"+strconv.Itoa(maxDeliveries))
	c.WaitLine(t, "READY")
	return c
}

// TestKilledConsumerLosesNothing: a consumer process killed (SIGKILL) during
// a handler run, with NoRetries and messages prefetched, uses up no attempt:
// every message, the one running included, reaches another member as
// attempt 1, and nothing is dead-lettered.
func TestKilledConsumerLosesNothing(t *testing.T) {
	needAMQP(t)
	ch, group := unique("crash.topic"), "crash-group"
	cleanup(t, []string{group + "." + ch, ch + ".DLQ"}, []string{ch, ch + ".DLQ"})
	c := startChild(t, ch, group, 3, 0)
	snd, _ := startPlugin(t, nil, nil)
	for i := range 5 {
		if err := snd.SendToChannel(context.Background(), ch, i); err != nil {
			t.Fatal(err)
		}
	}
	started := strings.Fields(c.WaitLine(t, "STARTED "))
	c.Kill(t)

	got, dead := &channelstest.Recorder{}, &channelstest.Recorder{}
	startPlugin(t, &service{Name: "survivor", Channels: channels.Channels{
		ch: {Group: group, MaxRetries: channels.NoRetries, MaxInFlight: 5,
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: ch + ".DLQ"}, Handler: got.Handle},
		ch + ".DLQ": {Group: "dlq-reader", Handler: dead.Handle}}}, nil)
	eventually(t, 30*time.Second, "5 messages after the kill", func() bool { return got.Count() == 5 })
	consistently(t, 500*time.Millisecond, "no duplicate, no dead letter", func() bool { return got.Count() == 5 && dead.Count() == 0 })
	seen := map[string]bool{}
	for _, m := range got.All() {
		if m.Attempt != 1 {
			t.Errorf("message %s attempt %d", m.Payload, m.Attempt)
		}
		seen[string(m.Payload)] = true
		if m.ID == started[1] && m.Headers["x-redelivered-count"] != "0" {
			t.Errorf("the killed run was counted as a failure: %v", m.Headers)
		}
	}
	if len(seen) != 5 {
		t.Errorf("payloads %v", seen)
	}
}

// TestPoisonPillBounded: a message that kills every consumer it reaches is
// dead-lettered with ErrMaxDeliveries once it was delivered MaxDeliveries
// times, on a classic queue too (the adapter counts the redeliveries).
func TestPoisonPillBounded(t *testing.T) {
	needAMQP(t)
	ch, group := unique("poison.topic"), "poison-group"
	cleanup(t, []string{group + "." + ch, ch + ".DLQ"}, []string{ch, ch + ".DLQ"})
	const maxDeliveries = 2
	c := startChild(t, ch, group, 1, maxDeliveries)
	snd, _ := startPlugin(t, nil, nil)
	if err := snd.SendToChannel(context.Background(), ch, "pill"); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= maxDeliveries; run++ {
		f := strings.Fields(c.WaitLine(t, "STARTED "))
		if f[2] != "1" {
			t.Fatalf("run %d: attempt %s", run, f[2])
		}
		c.Kill(t)
		if run < maxDeliveries {
			c = startChild(t, ch, group, 1, maxDeliveries)
		}
	}
	dead := &channelstest.Recorder{}
	got := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "survivor", Channels: channels.Channels{
		ch: {Group: group, MaxRetries: channels.NoRetries, MaxDeliveries: maxDeliveries,
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: ch + ".DLQ"}, Handler: got.Handle},
		ch + ".DLQ": {Group: "dlq-reader", Handler: dead.Handle}}}, nil)
	eventually(t, 30*time.Second, "the pill dead-lettered", func() bool { return dead.Count() == 1 })
	if got.Count() != 0 {
		t.Errorf("the pill ran a third time")
	}
	if msg := dead.All()[0].Headers["x-error-message"]; !strings.Contains(msg, "deliveries") {
		t.Errorf("x-error-message %q", msg)
	}
}
