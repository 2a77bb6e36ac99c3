package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// natsBroker: NATS JetStream. Every side uses a stream named after the
// channel (no dots in the benchmark's names, so it is the library's and
// @moleculer/channels' stream name too) and a durable consumer "bench".
//
// Raw: nats.go jetstream, asynchronous publishes whose acks are awaited
// per send (per batch for the batch test), a durable pull consumer read
// with Consume (MaxInFlight messages buffered) by MaxInFlight handlers,
// each acking its message.
// Watermill: watermill-nats' JetStream pub/sub (pkg/nats with JetStream
// on, the one its documentation recommends), a durable queue subscription
// with SubscribersCount = MaxInFlight.
//
// On the cluster profile nats-cluster (scripts/cluster.sh) the channels
// and raw streams have 3 replicas.
type natsBroker struct {
	name     string
	url      func() string // servers, comma-separated
	replicas int           // of the streams (0: the server's default)
}

func init() {
	register(natsBroker{name: "nats", url: natsURL})
	register(natsBroker{name: "nats-cluster", url: natsClusterURL, replicas: 3})
}

func (b natsBroker) Name() string { return b.name }

func (b natsBroker) Setup(ctx context.Context) (string, error) {
	nc, err := nats.Connect(b.url())
	if err != nil {
		return "", fmt.Errorf("%s unreachable: %w", b.name, err)
	}
	defer nc.Close()
	j, err := js.New(nc)
	if err != nil {
		return "", err
	}
	if _, err := j.AccountInfo(ctx); err != nil {
		return "", fmt.Errorf("%s without JetStream: %w", b.name, err)
	}
	if b.replicas > 0 {
		return fmt.Sprintf("nats-server %s (JetStream, %d replicas)", nc.ConnectedServerVersion(), b.replicas), nil
	}
	return "nats-server " + nc.ConnectedServerVersion() + " (JetStream)", nil
}

func (b natsBroker) Channels(Config) (func() (broker.Adapter, error), error) {
	var opts []jetstream.Option
	if b.replicas > 0 {
		opts = append(opts, jetstream.WithChannelOptions(jetstream.ChannelOptions{
			Stream: jetstream.StreamOptions{Replicas: b.replicas}}))
	}
	return func() (broker.Adapter, error) { return jetstream.New(b.url(), opts...) }, nil
}

func (b natsBroker) Node() (string, []string) { return "nats", []string{b.url()} }

func (b natsBroker) Cleanup(ctx context.Context, channel string) error {
	nc, err := nats.Connect(b.url())
	if err != nil {
		return err
	}
	defer nc.Close()
	j, err := js.New(nc)
	if err != nil {
		return err
	}
	err = j.DeleteStream(ctx, jetstream.StreamName(channel))
	if errors.Is(err, js.ErrStreamNotFound) {
		err = nil
	}
	return err
}

func (b natsBroker) Watermill() Impl {
	return watermillImpl{setup: func(ctx context.Context, channel string, cfg Config) (*wmPubSub, error) {
		jsc := wmnats.JetStreamConfig{AutoProvision: true, DurablePrefix: "bench",
			SubscribeOptions: []nats.SubOpt{nats.DeliverAll(), nats.AckExplicit()}}
		pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{URL: b.url(), JetStream: jsc}, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		sub, err := wmnats.NewSubscriber(wmnats.SubscriberConfig{
			URL:              b.url(),
			QueueGroupPrefix: "bench",
			SubscribersCount: cfg.MaxInFlight,
			CloseTimeout:     5 * time.Second,
			Unmarshaler:      &wmnats.NATSMarshaler{},
			JetStream:        jsc,
		}, watermill.NopLogger{})
		if err != nil {
			_ = pub.Close()
			return nil, err
		}
		return &wmPubSub{
			pub: pub,
			subscribe: func(ctx context.Context, _ int) (<-chan *message.Message, error) {
				return sub.Subscribe(ctx, channel)
			},
			subs:  1, // SubscribersCount subscriptions behind one output
			close: func() error { return errors.Join(sub.Close(), pub.Close()) },
		}, nil
	}}
}

func (b natsBroker) Raw() Impl { return natsRaw{b} }

type natsRaw struct{ b natsBroker }

type natsSession struct {
	subject  string
	pnc, cnc *nats.Conn
	pub      js.JetStream
	cc       js.ConsumeContext
	jobs     chan js.Msg
	wg       sync.WaitGroup
}

func (r natsRaw) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	s := &natsSession{subject: channel, jobs: make(chan js.Msg, cfg.MaxInFlight)}
	var err error
	if s.pnc, err = nats.Connect(r.b.url()); err != nil {
		return nil, err
	}
	if s.cnc, err = nats.Connect(r.b.url()); err != nil {
		s.pnc.Close()
		return nil, err
	}
	fail := func(err error) (Session, error) { s.pnc.Close(); s.cnc.Close(); return nil, err }
	if s.pub, err = js.New(s.pnc); err != nil {
		return fail(err)
	}
	cj, err := js.New(s.cnc)
	if err != nil {
		return fail(err)
	}
	stream, err := cj.CreateStream(ctx, js.StreamConfig{Name: jetstream.StreamName(channel), Subjects: []string{channel},
		Replicas: r.b.replicas})
	if err != nil {
		return fail(err)
	}
	cons, err := stream.CreateConsumer(ctx, js.ConsumerConfig{Durable: "bench", AckPolicy: js.AckExplicitPolicy,
		MaxAckPending: max(1000, 2*cfg.MaxInFlight)})
	if err != nil {
		return fail(err)
	}
	for range cfg.MaxInFlight {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for m := range s.jobs {
				handle(context.Background(), m.Data())
				_ = m.Ack()
			}
		}()
	}
	s.cc, err = cons.Consume(func(m js.Msg) { s.jobs <- m }, js.PullMaxMessages(cfg.MaxInFlight))
	if err != nil {
		close(s.jobs)
		s.wg.Wait()
		return fail(err)
	}
	return s, nil
}

func wait(ctx context.Context, f js.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *natsSession) Send(ctx context.Context, p []byte) error {
	f, err := s.pub.PublishAsync(s.subject, p)
	if err != nil {
		return err
	}
	return wait(ctx, f)
}

func (s *natsSession) SendBatch(ctx context.Context, ps [][]byte) error {
	fs := make([]js.PubAckFuture, 0, len(ps))
	for _, p := range ps {
		f, err := s.pub.PublishAsync(s.subject, p)
		if err != nil {
			return err
		}
		fs = append(fs, f)
	}
	for _, f := range fs {
		if err := wait(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

func (s *natsSession) Close(context.Context) error {
	s.cc.Stop()
	<-s.cc.Closed()
	close(s.jobs)
	s.wg.Wait()
	s.pnc.Close()
	s.cnc.Close()
	return nil
}
