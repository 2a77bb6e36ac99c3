package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
)

func init() {
	registerTarget(channelstest.Target{
		Name: "amqp",
		NewAdapter: func() (broker.Adapter, error) {
			return amqpAdapters.Track(amqp.New(brokerenv.AMQPURL(), amqp.WithManagementURL(brokerenv.AMQPManagementURL())))
		},
		Probe:     func() error { return brokerenv.Probe("amqp", brokerenv.PingAMQP) },
		Processes: true,
		Linked: channelstest.LinkedURL(brokerenv.AMQPURL, "5672", func(u string) (broker.Adapter, error) {
			return amqpAdapters.Track(amqp.New(u))
		}),
		// No claim timer: a message stays with its consumer while its
		// connection lives, and comes back at once when it dies.
		ClaimTime:  0,
		Restart:    amqpRestart,
		BrokerDown: amqpDown,
		BrokerUp:   amqpUp,
		Hostile:    amqpHostile,
		AfterSpec:  amqpAdapters.DeleteDeclared,
	})
}

// amqpAdapters are the AMQP adapters built during the running spec; at
// its end the queues and exchanges they declared are deleted.
var amqpAdapters = &brokerenv.AMQPTracker{
	Dial: func() (*amqp091.Connection, error) { return amqp091.Dial(brokerenv.AMQPURL()) },
	Logf: func(f string, args ...any) { GinkgoWriter.Printf(f, args...) },
}

// amqpRestart restarts RabbitMQ with scripts/services.sh and checks it did:
// a connection opened before must have been closed by the broker, and a new
// one must open after.
func amqpRestart(ctx context.Context) error {
	c, err := amqp091.Dial(brokerenv.AMQPURL())
	if err != nil {
		return fmt.Errorf("rabbitmq: before the restart: %w", err)
	}
	closed := c.NotifyClose(make(chan *amqp091.Error, 1))
	defer c.Close()
	if err := services(ctx, "restart", "rabbitmq"); err != nil {
		return err
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("rabbitmq was not restarted (a connection survived it): %s", notOurs("rabbitmq"))
	}
	return waitAMQP(ctx, true)
}

func amqpDown(ctx context.Context) error {
	if err := services(ctx, "down", "rabbitmq"); err != nil {
		return err
	}
	if brokerenv.PingAMQP() == nil {
		return fmt.Errorf("rabbitmq still answers after down: %s", notOurs("rabbitmq"))
	}
	return nil
}

func amqpUp(ctx context.Context) error {
	if err := services(ctx, "up", "rabbitmq"); err != nil {
		return err
	}
	return waitAMQP(ctx, true)
}

// waitAMQP waits until RabbitMQ answers (up) or not.
func waitAMQP(ctx context.Context, up bool) error {
	for {
		if (brokerenv.PingAMQP() == nil) == up {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rabbitmq: up=%v not reached: %w", up, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// amqpHostile publishes a raw message with amqp091 to the channel exchange
// (declared as the adapter declares it). AMQP always has a body, so an entry
// without a payload cannot be written; headers are an AMQP table, so only a
// headers blob that decodes (JSON or MsgPack) to a map can be: anything else
// is errors.ErrUnsupported.
func amqpHostile(ctx context.Context, channel string, e channelstest.RawEntry) (string, error) {
	if e.NoPayload {
		return "", fmt.Errorf("an AMQP message always has a body: %w", errors.ErrUnsupported)
	}
	var headers amqp091.Table
	if e.Headers != nil {
		var m map[string]any
		if json.Unmarshal(e.Headers, &m) != nil || m == nil {
			if (broker.MsgPack{}).Unmarshal(e.Headers, &m) != nil || m == nil { // bounded: no huge allocation for a hostile length
				return "", fmt.Errorf("headers that are not a map are not an AMQP table: %w", errors.ErrUnsupported)
			}
		}
		if len(m) == 0 {
			return "", fmt.Errorf("an empty headers table is no headers: %w", errors.ErrUnsupported)
		}
		headers = amqp091.Table{}
		for k, v := range m {
			headers[k] = tableValue(v)
		}
	}
	c, err := amqp091.Dial(brokerenv.AMQPURL())
	if err != nil {
		return "", err
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return "", err
	}
	if err := ch.ExchangeDeclare(channel, "fanout", true, false, false, false, nil); err != nil {
		return "", err
	}
	if err := ch.Confirm(false); err != nil {
		return "", err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "hostile-" + hex.EncodeToString(b[:])
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, channel, "", false, false,
		amqp091.Publishing{Headers: headers, MessageId: id, DeliveryMode: amqp091.Persistent, Body: e.Payload})
	if err != nil {
		return "", err
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return "", fmt.Errorf("hostile publish not confirmed: %v", err)
	}
	return id, nil
}

// tableValue converts a decoded JSON or MsgPack value to an AMQP field value.
func tableValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		t := amqp091.Table{}
		for k, e := range x {
			t[k] = tableValue(e)
		}
		return t
	case map[any]any:
		t := amqp091.Table{}
		for k, e := range x {
			t[fmt.Sprint(k)] = tableValue(e)
		}
		return t
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = tableValue(e)
		}
		return out
	case int8, int16, int32, int64, float32, float64, string, bool, nil, []byte:
		return x
	case int:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		return int64(x)
	}
	return fmt.Sprint(v)
}
