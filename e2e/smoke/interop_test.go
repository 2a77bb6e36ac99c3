package smoke

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

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
