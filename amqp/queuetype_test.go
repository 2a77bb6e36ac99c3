package amqp

import (
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// TestParseInequivalent reads the argument and the queue's value from
// RabbitMQ 3.10's refusals of a queue declaration.
func TestParseInequivalent(t *testing.T) {
	sent := amqp091.Table{"x-dead-letter-exchange": "bar", "x-delivery-limit": int64(9)}
	for _, tt := range []struct {
		reason string
		key    string
		cur    any
	}{
		{"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': received 'bar' but current is 'foo'", "x-dead-letter-exchange", "foo"},
		{"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum' of type 'longstr' but current is none", "x-queue-type", nil},
		{"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': received '9' but current is '8'", "x-delivery-limit", int64(8)},
		{"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': received none but current is the value 'foo' of type 'longstr'", "x-dead-letter-exchange", "foo"},
		{"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received 'classic' but current is 'quorum'", "x-queue-type", "quorum"},
	} {
		key, cur, ok := parseInequivalent(tt.reason, sent)
		if !ok || key != tt.key || cur != tt.cur {
			t.Errorf("%s: %q %#v %v", tt.reason, key, cur, ok)
		}
	}
}

// TestQuorumOnOldServer: RabbitMQ older than 3.10 has no at-least-once
// dead-lettering: the quorum group queue is declared without the
// x-dead-letter-strategy and x-overflow the adapter adds (kept on 3.10+
// and when the version is unknown), and no retry queue is quorum there.
func TestQuorumOnOldServer(t *testing.T) {
	ch := &broker.Channel{Name: "c", Group: "g", DeadLetter: broker.DeadLetterPolicy{Enabled: true, Queue: "dlq"}}
	g, err := planGroupQueue(ChannelOptions{}.withDefaults(), ch)
	if err != nil {
		t.Fatal(err)
	}
	if g.args["x-dead-letter-strategy"] != "at-least-once" || g.args["x-overflow"] != "reject-publish" {
		t.Fatalf("3.10 arguments %v", g.args)
	}
	for _, v := range []string{"3.10.8", "4.0.1", "", "unknown"} {
		if got := forServer(g, v); got.args["x-dead-letter-strategy"] != "at-least-once" {
			t.Errorf("%q: %v", v, got.args)
		}
	}
	old := forServer(g, "3.9.29")
	if _, ok := old.args["x-dead-letter-strategy"]; ok || old.args["x-overflow"] != nil || old.typ != QueueQuorum ||
		old.args["x-dead-letter-exchange"] != "dlq" {
		t.Errorf("3.9 arguments %v", old.args)
	}
	if versionAtLeast("3.9.29", 3, 10) || !versionAtLeast("3.10.0", 3, 10) || !versionAtLeast("3.11.2", 3, 10) {
		t.Error("versionAtLeast")
	}
}
