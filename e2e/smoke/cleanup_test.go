package smoke

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/e2e/brokerenv"
)

// cleanupChannels removes, at the end of the test, what @moleculer/channels
// 0.1.8 created for the given channels on the shared broker (streams, queues
// and exchanges, NATS streams, Kafka topics), so repeated runs do not pile
// them up. Call it before starting the peers: cleanups run last-in first-out,
// so this one runs after the peers were stopped. Errors are ignored.
func cleanupChannels(t *testing.T, broker string, groups []string, channels ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch broker {
		case "redis":
			if o, err := redis.ParseURL(brokerenv.RedisURL()); err == nil {
				c := redis.NewClient(o)
				defer c.Close()
				c.Del(ctx, channels...)
			}
		case "amqp":
			conn, err := amqp.Dial(brokerenv.AMQPURL())
			if err != nil {
				return
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				return
			}
			for _, n := range channels {
				for _, g := range groups {
					_, _ = ch.QueueDelete(g+"."+n, false, false, false)
				}
				_, _ = ch.QueueDelete(n, false, false, false) // a dead-letter queue
				_ = ch.ExchangeDelete(n, false, false)
			}
		case "nats":
			nc, err := nats.Connect(brokerenv.NATSURL())
			if err != nil {
				return
			}
			defer nc.Close()
			if js, err := jetstream.New(nc); err == nil {
				for _, n := range channels {
					_ = js.DeleteStream(ctx, strings.ReplaceAll(n, ".", "_"))
				}
			}
		case "kafka":
			client := &kafka.Client{Addr: kafka.TCP(brokerenv.KafkaBrokers()...)}
			_, _ = client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: channels})
		}
	})
}
