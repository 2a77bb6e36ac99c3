package main

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/memory"
)

// memoryBroker: the in-process bus. Raw is a buffered Go channel read by
// MaxInFlight goroutines; Watermill is gochannel; moleculer-channels is its
// Fake adapter (moleculer's local events).
type memoryBroker struct{}

func init() { register(memoryBroker{}) }

func (memoryBroker) Name() string { return "memory" }

func (memoryBroker) Setup(context.Context) (string, error) { return "in-process", nil }

func (memoryBroker) Channels(Config) (func() (broker.Adapter, error), error) {
	bus := memory.NewBus() // one bus per run, shared by the two plugins
	return func() (broker.Adapter, error) { return memory.New(memory.WithBus(bus)), nil }, nil
}

func (memoryBroker) Raw() Impl { return memoryRaw{} }

func (memoryBroker) Watermill() Impl {
	return watermillImpl{setup: func(_ context.Context, channel string, _ Config) (*wmPubSub, error) {
		gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
		return &wmPubSub{
			pub: gc,
			subscribe: func(ctx context.Context, _ int) (<-chan *message.Message, error) {
				return gc.Subscribe(ctx, channel)
			},
			subs:  1, // gochannel hands out the next message without waiting for the ack
			close: gc.Close,
		}, nil
	}}
}

func (memoryBroker) Node() (string, []string) { return "memory", nil }

func (memoryBroker) Cleanup(context.Context, string) error { return nil }

// memoryRaw: a buffered channel and MaxInFlight goroutines.
type memoryRaw struct{}

type memorySession struct {
	q      chan []byte
	closed chan struct{}
	wg     sync.WaitGroup
}

func (memoryRaw) Open(ctx context.Context, _ string, cfg Config, handle Handle) (Session, error) {
	s := &memorySession{q: make(chan []byte, 1024), closed: make(chan struct{})}
	for range cfg.MaxInFlight {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case p := <-s.q:
					handle(context.Background(), p)
				case <-s.closed:
					return
				}
			}
		}()
	}
	return s, nil
}

func (s *memorySession) Send(ctx context.Context, p []byte) error {
	select {
	case s.q <- p:
		return nil
	case <-s.closed:
		return errors.New("closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *memorySession) SendBatch(ctx context.Context, ps [][]byte) error {
	for _, p := range ps {
		if err := s.Send(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func (s *memorySession) Close(context.Context) error {
	close(s.closed)
	s.wg.Wait()
	return nil
}
