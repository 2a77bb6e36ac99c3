package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/microchannels/channels"
)

// channelsImpl is the library on one broker: a consumer plugin with the
// channel declared on a service, and a producer plugin of its own (two
// services, as in two processes).
type channelsImpl struct{ b Broker }

type benchService struct {
	Name     string
	Channels channels.Channels
}

// quietLogger keeps the plugins' start and stop lines out of the report.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

func (ci channelsImpl) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	newAdapter, err := ci.b.Channels(cfg)
	if err != nil {
		return nil, err
	}
	if newAdapter == nil {
		return nil, errNotAvailable
	}
	s := &channelsSession{channel: channel}
	ca, err := newAdapter()
	if err != nil {
		return nil, err
	}
	if s.consumer, err = channels.New(channels.WithAdapter(ca), channels.WithLogger(quietLogger)); err != nil {
		return nil, err
	}
	svc := &benchService{Name: "bench", Channels: channels.Channels{channel: {
		Group:       "bench",
		MaxInFlight: cfg.MaxInFlight,
		Handler: func(ctx context.Context, m *channels.Message) error {
			handle(ctx, m.Payload)
			return nil
		},
	}}}
	if err := s.consumer.Register(svc); err != nil {
		return nil, err
	}
	if err := s.consumer.Start(ctx); err != nil {
		return nil, err
	}
	pa, err := newAdapter()
	if err != nil {
		_ = s.consumer.Stop(ctx)
		return nil, err
	}
	if s.producer, err = channels.New(channels.WithAdapter(pa), channels.WithLogger(quietLogger)); err == nil {
		err = s.producer.Start(ctx)
	}
	if err != nil {
		_ = s.consumer.Stop(ctx)
		return nil, err
	}
	return s, nil
}

type channelsSession struct {
	channel            string
	consumer, producer *channels.Plugin
}

// Send: a []byte payload that is JSON is sent as is.
func (s *channelsSession) Send(ctx context.Context, payload []byte) error {
	return s.producer.SendToChannel(ctx, s.channel, payload)
}

// SendBatch: Plugin.SendBatch, the payloads (JSON) sent as they are.
func (s *channelsSession) SendBatch(ctx context.Context, payloads [][]byte) error {
	return s.producer.SendBatch(ctx, s.channel, channels.BatchOf(payloads...))
}

func (s *channelsSession) Close(ctx context.Context) error {
	return errors.Join(s.producer.Stop(ctx), s.consumer.Stop(ctx))
}
