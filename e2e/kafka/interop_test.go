package kafka

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/interop"
)

// scenarios are the interop tests shared by the brokers, on Kafka, where a
// consumer that just started may take up to a minute to join its group.
var scenarios = interop.Scenarios{
	Adapter:  kafkaURL(),
	Need:     needKafka,
	Start:    startPlugin,
	Patience: 60 * time.Second,
}

// Go sends, a Node @moleculer/channels 0.1.8 (kafkajs) service consumes in
// its own group, from a topic of three partitions, with headers and context.
func TestInteropGoToNode(t *testing.T) { scenarios.GoToNode(t, "--partitions", "3") }

// Node sends, Go consumes, with headers and context.
func TestInteropNodeToGo(t *testing.T) { scenarios.NodeToGo(t, interop.NodeToGo{}) }

// A Go dead letter keeps the original headers and carries the x-error-*
// headers and x-original-partition, without x-group; Node reads them as
// plain headers.
func TestInteropGoDeadLetterReadByNode(t *testing.T) {
	scenarios.GoDeadLetterReadByNode(t, interop.GoDeadLetter{
		Present: []string{broker.HeaderOriginalPartition}, Absent: []string{"x-group"}})
}

// A Node dead letter reaches a Go consumer of the dead-letter topic with its
// payload, headers and x-original-channel / -group / -partition.
func TestInteropNodeDeadLetterReadByGo(t *testing.T) {
	m := scenarios.NodeDeadLetterReadByGo(t, interop.NodeDeadLetter{
		Present: []string{broker.HeaderOriginalPartition}, KeepsHeaders: true})
	if m.Attempt != 1 {
		t.Fatalf("attempt %d: the dead letter has no x-group of the reader, so no attempts are counted", m.Attempt)
	}
}

// Retries stay inside the failing group across languages: the retry copies
// of a failing Node group and of a failing Go group (x-group, attempts in
// x-redelivered-count) are skipped by a good Go group on the same channel,
// which runs the message once.
func TestInteropRetriesStayInTheirGroup(t *testing.T) {
	needKafka(t)
	interop.Need(t)
	ch := unique("interop.retries")
	good := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "go-good", Channels: channels.Channels{ch: channels.On(good.Handle)}})
	var goRuns sync.Map
	startPlugin(t, &service{Name: "go-failing", Channels: channels.Channels{ch: {MaxRetries: 2,
		Backoff: broker.ConstantBackoff(20 * time.Millisecond),
		Handler: func(ctx context.Context, m *channels.Message) error {
			goRuns.Store(m.Attempt, true)
			return errors.New("fail")
		}}}})
	node := interop.Consume(t, "--adapter", kafkaURL(), "--channel", ch, "--group", "node-good", "--count", "1", "--timeout", "60000")
	interop.Consume(t, "--adapter", kafkaURL(), "--channel", ch, "--group", "node-failing", "--fail",
		"--max-retries", "3", "--timeout", "60000")
	interop.Send(t, "--adapter", kafkaURL(), "--channel", ch, "--payload", `{"id":9}`)
	node.Wait(t, 1, 60*time.Second)
	eventually(t, 30*time.Second, "the Go group's three attempts", func() bool {
		_, third := goRuns.Load(3)
		return third
	})
	eventually(t, 30*time.Second, "one run in the good Go group", func() bool { return good.Count() == 1 })
	consistently(t, 2*time.Second, "no retry copy of another group runs in the good Go group", func() bool { return good.Count() == 1 })
}
