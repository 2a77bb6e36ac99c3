package amqp

import (
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/onsi/gomega"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

func needAMQP(t *testing.T) {
	t.Helper()
	brokerenv.Need(t, "amqp", brokerenv.PingAMQP)
}

var (
	unique       = channelstest.Unique
	eventually   = channelstest.EventuallyTrue
	consistently = channelstest.ConsistentlyTrue
)

// service is the schema of a test service.
type service = channelstest.Service

// startPlugin starts a plugin on the test RabbitMQ with schema (nil: a
// sender) and stops it at the end of the test.
func startPlugin(t *testing.T, schema any, aopts []chamqp.Option, opts ...channels.Option) (*channels.Plugin, *chamqp.Adapter) {
	t.Helper()
	a, err := chamqp.New(brokerenv.AMQPURL(), aopts...)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]channels.Option{channels.WithBackoff(broker.ConstantBackoff(50 * time.Millisecond))}, opts...)
	return channelstest.StartPlugin(t, a, schema, opts...), a
}

// startPluginOn starts a plugin on adapter a with schema, stopped at the end
// of the test.
func startPluginOn(t *testing.T, a *chamqp.Adapter, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	opts = append([]channels.Option{channels.WithBackoff(broker.ConstantBackoff(50 * time.Millisecond))}, opts...)
	return channelstest.StartPlugin(t, a, schema, opts...)
}

// rawConn is a plain amqp091 connection for inspecting the broker.
func rawConn(t *testing.T) *amqp091.Connection {
	t.Helper()
	c, err := amqp091.Dial(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawChannel opens a channel on c (closed at the end of the test).
func rawChannel(t *testing.T, c *amqp091.Connection) *amqp091.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	return ch
}

// cleanup deletes queues and exchanges at the end of the test (retry queues
// of the given queues included: they expire by themselves too).
func cleanup(t *testing.T, queues, exchanges []string) {
	t.Helper()
	t.Cleanup(func() {
		c, err := amqp091.Dial(brokerenv.AMQPURL())
		if err != nil {
			return
		}
		defer c.Close()
		for _, q := range queues {
			if ch, err := c.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				_ = ch.Close()
			}
		}
		for _, e := range exchanges {
			if ch, err := c.Channel(); err == nil {
				_ = ch.ExchangeDelete(e, false, false)
				_ = ch.Close()
			}
		}
	})
}

// getOne waits for one message in queue (basic.get) and acks it.
func getOne(t *testing.T, ch *amqp091.Channel, queue string, timeout time.Duration) amqp091.Delivery {
	t.Helper()
	var d amqp091.Delivery
	gomega.NewWithT(t).Eventually(func() (bool, error) {
		got, ok, err := ch.Get(queue, true)
		d = got
		return ok, err
	}).WithTimeout(timeout).WithPolling(20*time.Millisecond).Should(gomega.BeTrue(), "a message in %s", queue)
	return d
}
