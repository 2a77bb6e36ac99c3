package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	wmamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// amqpBroker: RabbitMQ. Every side sends persistent messages to a durable
// fanout exchange named after the channel, bound to the durable queue
// "bench.<channel>" (the group queue as the library and @moleculer/channels
// name it). The library and the raw loop use quorum queues (the library's
// default); Watermill and @moleculer/channels declare classic ones.
//
// Raw: amqp091-go, publisher confirms awaited per send (deferred
// confirms on as many confirm-mode channels as the adapter's pool for
// concurrent sends, one channel per batch whose confirms are awaited
// together); a consumer with prefetch = MaxInFlight, MaxInFlight handlers,
// each acking its message.
// Watermill: watermill-amqp's durable pub/sub config with ConfirmDelivery,
// one subscription (prefetch 1) per handler.
//
// On the cluster profile rabbitmq-cluster (scripts/cluster.sh) the same:
// quorum queues on both sides, replicated on the 3 nodes; the library is
// given the 3 URLs, the raw loop dials the first that answers.
type amqpBroker struct {
	name string
	url  func() string // URLs, semicolon-separated (the library's form)
	kind string        // follows the version in the report's header
}

func init() {
	register(amqpBroker{name: "amqp", url: amqpURL})
	register(amqpBroker{name: "rabbitmq-cluster", url: rabbitmqClusterURL, kind: " (3 nodes, quorum queues)"})
}

func (b amqpBroker) Name() string { return b.name }

// dial connects to the first of the broker's URLs that answers.
func (b amqpBroker) dial() (*amqp091.Connection, error) {
	var errs []string
	for _, u := range strings.Split(b.url(), ";") {
		conn, err := amqp091.Dial(strings.TrimSpace(u))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, errors.New(strings.Join(errs, "; "))
}

func (b amqpBroker) Setup(ctx context.Context) (string, error) {
	conn, err := b.dial()
	if err != nil {
		return "", fmt.Errorf("%s unreachable: %w", b.name, err)
	}
	defer conn.Close()
	product, _ := conn.Properties["product"].(string)
	version, _ := conn.Properties["version"].(string)
	return product + " " + version + b.kind, nil
}

func (b amqpBroker) Channels(Config) (func() (broker.Adapter, error), error) {
	return func() (broker.Adapter, error) { return chamqp.New(b.url()) }, nil
}

// first is the first of the broker's URLs (Watermill and bench.js take one).
func (b amqpBroker) first() string { return strings.TrimSpace(strings.Split(b.url(), ";")[0]) }

func (b amqpBroker) Node() (string, []string) { return "amqp", []string{b.first()} }

func groupQueue(channel string) string { return "bench." + channel }

func (b amqpBroker) Cleanup(ctx context.Context, channel string) error {
	conn, err := b.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDelete(groupQueue(channel), false, false, false); err != nil {
		return err
	}
	return ch.ExchangeDelete(channel, false, false)
}

func (b amqpBroker) Watermill() Impl {
	return watermillImpl{setup: func(ctx context.Context, channel string, cfg Config) (*wmPubSub, error) {
		c := wmamqp.NewDurablePubSubConfig(b.first(), groupQueue)
		c.Publish.ConfirmDelivery = true
		c.Publish.ChannelPoolSize = 1
		if cfg.Test == Concurrent {
			c.Publish.ChannelPoolSize = cfg.Senders // a publish holds its channel until confirmed
		}
		pub, err := wmamqp.NewPublisher(c, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		sub, err := wmamqp.NewSubscriber(c, watermill.NopLogger{})
		if err != nil {
			_ = pub.Close()
			return nil, err
		}
		return &wmPubSub{
			pub: pub,
			subscribe: func(ctx context.Context, _ int) (<-chan *message.Message, error) {
				return sub.Subscribe(ctx, channel)
			},
			subs:  cfg.MaxInFlight,
			close: func() error { return errors.Join(pub.Close(), sub.Close()) },
		}, nil
	}}
}

func (b amqpBroker) Raw() Impl { return amqpRaw{b} }

type amqpRaw struct{ b amqpBroker }

type amqpSession struct {
	exchange   string
	pconn      *amqp091.Connection
	cconn      *amqp091.Connection
	pubs       []*amqp091.Channel
	next       atomic.Uint32
	wg         sync.WaitGroup
	consumerCh *amqp091.Channel
}

func (r amqpRaw) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	s := &amqpSession{exchange: channel}
	var err error
	if s.cconn, err = r.b.dial(); err != nil {
		return nil, err
	}
	if s.pconn, err = r.b.dial(); err != nil {
		_ = s.cconn.Close()
		return nil, err
	}
	fail := func(err error) (Session, error) { _ = s.Close(ctx); return nil, err }
	if s.consumerCh, err = s.cconn.Channel(); err != nil {
		return fail(err)
	}
	ch := s.consumerCh
	if err := ch.ExchangeDeclare(channel, "fanout", true, false, false, false, nil); err != nil {
		return fail(err)
	}
	if _, err := ch.QueueDeclare(groupQueue(channel), true, false, false, false, amqp091.Table{"x-queue-type": "quorum"}); err != nil {
		return fail(err)
	}
	if err := ch.QueueBind(groupQueue(channel), "", channel, false, nil); err != nil {
		return fail(err)
	}
	if err := ch.Qos(cfg.MaxInFlight, 0, false); err != nil {
		return fail(err)
	}
	deliveries, err := ch.Consume(groupQueue(channel), "", false, false, false, false, nil)
	if err != nil {
		return fail(err)
	}
	for range cfg.MaxInFlight {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for d := range deliveries {
				handle(context.Background(), d.Body)
				_ = d.Ack(false)
			}
		}()
	}
	pubs := 1
	if cfg.Test == Concurrent {
		pubs = chamqp.DefaultPublisherChannels
	}
	for range pubs {
		pc, err := s.pconn.Channel()
		if err != nil {
			return fail(err)
		}
		if err := pc.Confirm(false); err != nil {
			return fail(err)
		}
		s.pubs = append(s.pubs, pc)
	}
	return s, nil
}

func (s *amqpSession) publish(ctx context.Context, ch *amqp091.Channel, p []byte) (*amqp091.DeferredConfirmation, error) {
	return ch.PublishWithDeferredConfirmWithContext(ctx, s.exchange, "", false, false,
		amqp091.Publishing{DeliveryMode: amqp091.Persistent, ContentType: "application/json", Body: p})
}

func confirmed(ctx context.Context, dc *amqp091.DeferredConfirmation) error {
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("publish nacked by the broker")
	}
	return nil
}

func (s *amqpSession) Send(ctx context.Context, p []byte) error {
	dc, err := s.publish(ctx, s.pubs[int(s.next.Add(1))%len(s.pubs)], p)
	if err != nil {
		return err
	}
	return confirmed(ctx, dc)
}

func (s *amqpSession) SendBatch(ctx context.Context, ps [][]byte) error {
	dcs := make([]*amqp091.DeferredConfirmation, 0, len(ps))
	for _, p := range ps {
		dc, err := s.publish(ctx, s.pubs[0], p)
		if err != nil {
			return err
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		if err := confirmed(ctx, dc); err != nil {
			return err
		}
	}
	return nil
}

func (s *amqpSession) Close(context.Context) error {
	var errs []error
	if s.consumerCh != nil {
		errs = append(errs, s.consumerCh.Close()) // ends the deliveries
	}
	s.wg.Wait()
	errs = append(errs, s.cconn.Close(), s.pconn.Close())
	return errors.Join(errs...)
}
