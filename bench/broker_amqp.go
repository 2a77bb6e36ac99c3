package main

import (
	"context"
	"errors"
	"fmt"
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
type amqpBroker struct{}

func init() { register(amqpBroker{}) }

func (amqpBroker) Name() string { return "amqp" }

func (amqpBroker) Setup(ctx context.Context) (string, error) {
	conn, err := amqp091.Dial(amqpURL())
	if err != nil {
		return "", fmt.Errorf("rabbitmq unreachable: %w", err)
	}
	defer conn.Close()
	product, _ := conn.Properties["product"].(string)
	version, _ := conn.Properties["version"].(string)
	return product + " " + version, nil
}

func (amqpBroker) Channels(Config) (func() (broker.Adapter, error), error) {
	return func() (broker.Adapter, error) { return chamqp.New(amqpURL()) }, nil
}

func (amqpBroker) Node() (string, []string) { return "amqp", []string{amqpURL()} }

func groupQueue(channel string) string { return "bench." + channel }

func (amqpBroker) Cleanup(ctx context.Context, channel string) error {
	conn, err := amqp091.Dial(amqpURL())
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

func (amqpBroker) Watermill() Impl {
	return watermillImpl{setup: func(ctx context.Context, channel string, cfg Config) (*wmPubSub, error) {
		c := wmamqp.NewDurablePubSubConfig(amqpURL(), groupQueue)
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

func (amqpBroker) Raw() Impl { return amqpRaw{} }

type amqpRaw struct{}

type amqpSession struct {
	exchange   string
	pconn      *amqp091.Connection
	cconn      *amqp091.Connection
	pubs       []*amqp091.Channel
	next       atomic.Uint32
	wg         sync.WaitGroup
	consumerCh *amqp091.Channel
}

func (amqpRaw) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	s := &amqpSession{exchange: channel}
	var err error
	if s.cconn, err = amqp091.Dial(amqpURL()); err != nil {
		return nil, err
	}
	if s.pconn, err = amqp091.Dial(amqpURL()); err != nil {
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
