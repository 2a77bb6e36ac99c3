package smoke

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/e2e/interop"
)

// TestInteropHarness proves the Node peer itself works: one @moleculer/channels
// service sends, another consumes, on each broker.
func TestInteropHarness(t *testing.T) {
	brokers := []struct {
		name, url string
		probe     func() error
	}{
		{"redis", brokerenv.RedisURL(), func() error { return brokerenv.DialURL(brokerenv.RedisURL()) }},
		{"amqp", brokerenv.AMQPURL(), func() error { return brokerenv.DialURL(brokerenv.AMQPURL()) }},
		{"nats", brokerenv.NATSURL(), func() error { return brokerenv.DialURL(brokerenv.NATSURL()) }},
		{"kafka", "kafka://" + brokerenv.KafkaBrokers()[0], func() error { return brokerenv.Dial(brokerenv.KafkaBrokers()[0]) }},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			interop.Need(t)
			brokerenv.Need(t, b.name, b.probe)
			url := b.url
			if b.name == "redis" {
				url = strings.TrimSuffix(url, "/0")
			}
			ch := unique("interop." + b.name)
			cleanupChannels(t, b.name, []string{"g1"}, ch)
			c := interop.Consume(t, "--adapter", url, "--channel", ch, "--group", "g1", "--count", "1", "--context", "--timeout", "60000")
			sent := interop.Send(t, "--adapter", url, "--channel", ch, "--payload", `{"a":1}`, "--headers", `{"k":"v"}`, "--meta", `{"m":2}`)
			if len(sent) != 1 {
				t.Fatalf("sent %d", len(sent))
			}
			got := c.Wait(t, 1, 60*time.Second)[0]
			var p map[string]any
			if err := json.Unmarshal(got.Payload, &p); err != nil || p["a"] != 1.0 {
				t.Fatalf("payload %s (%v)", got.Payload, err)
			}
			if got.Headers["k"] != "v" || got.Headers["$requestID"] == "" {
				t.Fatalf("headers %v", got.Headers)
			}
			if fmt.Sprint(got.Meta["m"]) != "2" {
				t.Fatalf("meta %v", got.Meta)
			}
		})
	}
}

// TestInteropHarnessDeadLetter proves `peer.js consume --fail --dead-letter`
// and pins down what @moleculer/channels 0.1.8 puts on a dead letter: a
// failing Node consumer (maxRetries 0) moves the message to the dead-letter
// channel, and a second Node peer (or, for AMQP, the raw queue) reads it.
// 0.1.8 has no x-error-* headers; it adds x-original-channel and
// x-original-group (plus x-original-id on Redis, x-original-partition on
// Kafka). Redis and Kafka keep the original headers ($meta included); NATS and
// AMQP replace them.
func TestInteropHarnessDeadLetter(t *testing.T) {
	brokers := []struct {
		name, url string
		probe     func() error
		keeps     bool     // the original headers survive dead-lettering
		extra     []string // adapter-specific x-original-* headers
	}{
		{"redis", strings.TrimSuffix(brokerenv.RedisURL(), "/0"), func() error { return brokerenv.DialURL(brokerenv.RedisURL()) }, true, []string{"x-original-id"}},
		{"amqp", brokerenv.AMQPURL(), func() error { return brokerenv.DialURL(brokerenv.AMQPURL()) }, false, nil},
		{"nats", brokerenv.NATSURL(), func() error { return brokerenv.DialURL(brokerenv.NATSURL()) }, false, nil},
		{"kafka", "kafka://" + brokerenv.KafkaBrokers()[0], func() error { return brokerenv.Dial(brokerenv.KafkaBrokers()[0]) }, true, []string{"x-original-partition"}},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			interop.Need(t)
			brokerenv.Need(t, b.name, b.probe)
			ch := unique("dlq." + b.name)
			dlq := "FAILED_" + strings.ReplaceAll(ch, ".", "_")
			cleanupChannels(t, b.name, []string{"g1", "dlq"}, ch, dlq)
			var dead *interop.Consumer
			if b.name != "amqp" {
				// Redis and NATS groups start at new messages: read the DLQ before anything fails.
				dead = interop.Consume(t, "--adapter", b.url, "--channel", dlq, "--group", "dlq", "--count", "1", "--context", "--timeout", "60000")
			}
			failing := interop.Consume(t, "--adapter", b.url, "--channel", ch, "--group", "g1", "--count", "1", "--context",
				"--fail", "--max-retries", "0", "--dead-letter", dlq, "--timeout", "60000")
			interop.Send(t, "--adapter", b.url, "--channel", ch, "--payload", `{"a":1}`, "--headers", `{"k":"v"}`, "--meta", `{"m":2}`)
			failing.Wait(t, 1, 60*time.Second)

			var payload []byte
			var headers map[string]string
			if b.name == "amqp" {
				// 0.1.8 publishes dead letters to the DEAD_LETTER exchange, routed to the queue
				// named after the dead-letter channel, not to the channel's exchange: a Node
				// channel consumer of the DLQ never sees them, so read the queue itself.
				payload, headers = amqpGet(t, dlq)
			} else {
				got := dead.Wait(t, 1, 60*time.Second)[0]
				payload, headers = got.Payload, got.Headers
				if b.keeps && fmt.Sprint(got.Meta["m"]) != "2" {
					t.Errorf("meta %v, want the original $meta", got.Meta)
				}
			}
			var p map[string]any
			if err := json.Unmarshal(payload, &p); err != nil || p["a"] != 1.0 {
				t.Fatalf("payload %s (%v)", payload, err)
			}
			if headers["x-original-channel"] != ch || headers["x-original-group"] != "g1" {
				t.Errorf("headers %v, want x-original-channel=%s x-original-group=g1", headers, ch)
			}
			for _, h := range b.extra {
				if headers[h] == "" {
					t.Errorf("headers %v, want %s", headers, h)
				}
			}
			for h := range headers {
				if strings.HasPrefix(h, "x-error") {
					t.Errorf("0.1.8 sets no x-error-* headers, got %s", h)
				}
			}
			if _, ok := headers["k"]; ok != b.keeps {
				t.Errorf("original header k kept=%v, want %v (headers %v)", ok, b.keeps, headers)
			}
		})
	}
}

// amqpGet polls a queue until it holds a message, and returns its body and
// headers as strings.
func amqpGet(t *testing.T, queue string) ([]byte, map[string]string) {
	t.Helper()
	conn, err := amqp.Dial(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var (
		d      amqp.Delivery
		ok     bool
		getErr error
	)
	channelstest.EventuallyTrue(t, 30*time.Second, "a message in queue "+queue, func() bool {
		d, ok, getErr = ch.Get(queue, true)
		return ok || getErr != nil
	})
	if getErr != nil {
		t.Fatal(getErr)
	}
	_, _ = ch.QueueDelete(queue, false, false, false)
	h := map[string]string{}
	for k, v := range d.Headers {
		h[k] = fmt.Sprint(v)
	}
	return d.Body, h
}
