package main

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// wmPubSub is Watermill's pub/sub for one run.
type wmPubSub struct {
	pub message.Publisher
	// subscribe opens the i-th subscription of the consumer group.
	subscribe func(ctx context.Context, i int) (<-chan *message.Message, error)
	// subs is the number of subscriptions: Watermill hands a subscription
	// its next message once the previous one is acked (except gochannel
	// and the NATS subscriber with SubscribersCount), so MaxInFlight n is
	// n subscriptions of the group where the broker shares a group's
	// messages between them.
	subs int
	// close releases the publisher, the subscribers and their clients.
	close func() error
}

// watermillImpl runs MaxInFlight workers over the subscriptions of a
// wmPubSub, each handling a message and acking it.
type watermillImpl struct {
	setup func(ctx context.Context, channel string, cfg Config) (*wmPubSub, error)
}

func (w watermillImpl) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	ps, err := w.setup(ctx, channel, cfg)
	if err != nil {
		return nil, err
	}
	subCtx, cancel := context.WithCancel(context.Background())
	s := &wmSession{ps: ps, topic: channel, cancel: cancel}
	subs := max(1, ps.subs)
	for i := range subs {
		out, err := ps.subscribe(subCtx, i)
		if err != nil {
			_ = s.Close(ctx)
			return nil, err
		}
		workers := cfg.MaxInFlight / subs
		if i < cfg.MaxInFlight%subs {
			workers++
		}
		for range max(1, workers) {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				for m := range out {
					handle(m.Context(), m.Payload)
					m.Ack()
				}
			}()
		}
	}
	return s, nil
}

type wmSession struct {
	ps     *wmPubSub
	topic  string
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *wmSession) Send(_ context.Context, payload []byte) error {
	return s.ps.pub.Publish(s.topic, message.NewMessage(watermill.NewUUID(), payload))
}

// SendBatch: Publish takes any number of messages.
func (s *wmSession) SendBatch(_ context.Context, payloads [][]byte) error {
	if len(payloads) == 0 {
		return nil
	}
	msgs := make([]*message.Message, len(payloads))
	for i, p := range payloads {
		msgs[i] = message.NewMessage(watermill.NewUUID(), p)
	}
	return s.ps.pub.Publish(s.topic, msgs...)
}

func (s *wmSession) Close(ctx context.Context) error {
	s.cancel()
	err := s.ps.close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, errors.New("watermill workers did not stop"))
	}
	return err
}
