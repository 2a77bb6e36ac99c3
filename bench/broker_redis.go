package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/redis"
)

// redisBroker: Redis Streams, on the single node, on the Cluster of the
// test suite (3 primaries) or on the cluster profile redis-cluster-ha (3
// primaries with a replica each, scripts/cluster.sh), the same harness.
//
// Raw: XADD (through go-redis' autopipeliner for concurrent sends, one
// pipeline per batch); a consumer sending each XACK of finished messages
// in the same pipeline as its next XREADGROUP (COUNT = free handlers).
// Watermill: watermill-redisstream, one subscription per handler.
// channels: the default adapter, with WithAutoPipeline for the concurrent
// test (what the README recommends for many concurrent senders); a batch
// is one pipeline either way.
type redisBroker struct {
	name string
	// addrs are the Cluster's seed addresses; nil: the single node of
	// redisURL.
	addrs func() []string
	// kind follows the version in the report's header ("Redis 7.0.15 (Cluster)").
	kind string
}

func init() {
	register(redisBroker{name: "redis"})
	register(redisBroker{name: "redis-cluster", addrs: redisClusterAddrs, kind: " (Cluster)"})
	register(redisBroker{name: "redis-cluster-ha", addrs: redisClusterHAAddrs, kind: " (Cluster, 3 primaries with a replica each)"})
}

func (b redisBroker) Name() string { return b.name }

func (b redisBroker) cluster() bool { return b.addrs != nil }

// client returns a new client with at least poolSize connections (per
// node on the Cluster), speaking RESP2 as the library's adapter does
// (redis.DefaultProtocol) unless the URL sets protocol=.
func (b redisBroker) client(poolSize int) (goredis.UniversalClient, error) {
	if b.cluster() {
		return goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: b.addrs(), PoolSize: poolSize,
			Protocol: redis.DefaultProtocol}), nil
	}
	o, err := goredis.ParseURL(redisURL())
	if err != nil {
		return nil, err
	}
	if o.Protocol == 0 {
		o.Protocol = redis.DefaultProtocol
	}
	if poolSize > o.PoolSize {
		o.PoolSize = poolSize
	}
	return goredis.NewClient(o), nil
}

func (b redisBroker) Setup(ctx context.Context) (string, error) {
	c, err := b.client(0)
	if err != nil {
		return "", err
	}
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("%s unreachable: %w", b.Name(), err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return "Redis " + v + b.kind, nil
		}
	}
	return "Redis", nil
}

func (b redisBroker) Channels(cfg Config) (func() (broker.Adapter, error), error) {
	var opts []redis.Option
	if cfg.Test == Concurrent {
		opts = append(opts, redis.WithAutoPipeline())
	}
	return func() (broker.Adapter, error) {
		if b.cluster() {
			return redis.NewFromOptions(&goredis.UniversalOptions{Addrs: b.addrs(), IsClusterMode: true}, opts...)
		}
		return redis.New(redisURL(), opts...)
	}, nil
}

func (b redisBroker) Node() (string, []string) {
	if b.cluster() {
		return "redis-cluster", b.addrs()
	}
	return "redis", []string{redisURL()}
}

func (b redisBroker) Cleanup(ctx context.Context, channel string) error {
	c, err := b.client(0)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Del(ctx, channel).Err()
}

func (b redisBroker) Watermill() Impl {
	return watermillImpl{setup: func(ctx context.Context, channel string, cfg Config) (*wmPubSub, error) {
		pc, err := b.client(cfg.Senders)
		if err != nil {
			return nil, err
		}
		sc, err := b.client(2*cfg.MaxInFlight + 10) // a blocking read per subscription, and claims
		if err != nil {
			return nil, err
		}
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: pc}, watermill.NopLogger{})
		if err != nil {
			return nil, err
		}
		var subs []*redisstream.Subscriber
		return &wmPubSub{
			pub: pub,
			subscribe: func(ctx context.Context, i int) (<-chan *message.Message, error) {
				sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
					Client:                        sc,
					Consumer:                      fmt.Sprintf("c%d", i),
					ConsumerGroup:                 "bench",
					DisableIndefiniteInitialBlock: true, // lets Close end the reads
				}, watermill.NopLogger{})
				if err != nil {
					return nil, err
				}
				subs = append(subs, sub)
				return sub.Subscribe(ctx, channel)
			},
			subs: cfg.MaxInFlight,
			close: func() error {
				errs := []error{pub.Close()}
				for _, s := range subs {
					errs = append(errs, s.Close())
				}
				return errors.Join(append(errs, pc.Close(), sc.Close())...)
			},
		}, nil
	}}
}

func (b redisBroker) Raw() Impl { return redisRaw{b} }

type redisRaw struct{ b redisBroker }

type redisSession struct {
	stream   string
	pub, con goredis.UniversalClient
	ap       *goredis.AutoPipeliner // concurrent sends
	cancel   context.CancelFunc
	done     chan struct{}
}

func (r redisRaw) Open(ctx context.Context, channel string, cfg Config, handle Handle) (Session, error) {
	pub, err := r.b.client(cfg.Senders)
	if err != nil {
		return nil, err
	}
	con, err := r.b.client(0)
	if err != nil {
		return nil, err
	}
	s := &redisSession{stream: channel, pub: pub, con: con, done: make(chan struct{})}
	if err := con.XGroupCreateMkStream(ctx, channel, "bench", "$").Err(); err != nil {
		_ = s.closeClients()
		return nil, err
	}
	if cfg.Test == Concurrent {
		switch c := pub.(type) {
		case *goredis.Client:
			s.ap, err = c.AutoPipeline()
		case *goredis.ClusterClient:
			s.ap, err = c.AutoPipeline()
		}
		if err != nil {
			_ = s.closeClients()
			return nil, err
		}
	}
	cctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.consume(cctx, cfg.MaxInFlight, handle)
	return s, nil
}

// consume runs up to mif handlers; each round trip acknowledges the
// messages finished since the last one and reads as many as there are
// free handlers.
func (s *redisSession) consume(ctx context.Context, mif int, handle Handle) {
	defer close(s.done)
	jobs := make(chan goredis.XMessage, mif)
	finished := make(chan string, mif)
	var wg sync.WaitGroup
	defer func() { close(jobs); wg.Wait() }()
	for range mif {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range jobs {
				p, _ := m.Values["payload"].(string)
				handle(ctx, []byte(p))
				finished <- m.ID
			}
		}()
	}
	inFlight := 0
	var acks []string
	for ctx.Err() == nil {
		if inFlight == mif { // every handler busy: wait for one
			select {
			case id := <-finished:
				acks, inFlight = append(acks, id), inFlight-1
			case <-ctx.Done():
				return
			}
		}
	drain:
		for {
			select {
			case id := <-finished:
				acks, inFlight = append(acks, id), inFlight-1
			default:
				break drain
			}
		}
		pipe := s.con.Pipeline()
		if len(acks) > 0 {
			pipe.XAck(ctx, s.stream, "bench", acks...)
		}
		read := pipe.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "bench", Consumer: "c",
			Streams: []string{s.stream, ">"}, Count: int64(mif - inFlight), Block: 200 * time.Millisecond})
		_, err := pipe.Exec(ctx)
		acks = acks[:0]
		if err != nil && !errors.Is(err, goredis.Nil) {
			if ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		for _, xs := range read.Val() {
			for _, m := range xs.Messages {
				inFlight++
				jobs <- m
			}
		}
	}
}

func (s *redisSession) xadd(ctx context.Context, c goredis.Cmdable, p []byte) *goredis.StringCmd {
	return c.XAdd(ctx, &goredis.XAddArgs{Stream: s.stream, Values: []any{"payload", p}})
}

func (s *redisSession) Send(ctx context.Context, p []byte) error {
	if s.ap != nil {
		return s.xadd(ctx, s.ap, p).Err()
	}
	return s.xadd(ctx, s.pub, p).Err()
}

func (s *redisSession) SendBatch(ctx context.Context, ps [][]byte) error {
	if len(ps) == 0 {
		return nil
	}
	pipe := s.pub.Pipeline()
	for _, p := range ps {
		s.xadd(ctx, pipe, p)
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (s *redisSession) Close(ctx context.Context) error {
	s.cancel()
	<-s.done
	return s.closeClients()
}

func (s *redisSession) closeClients() error {
	var err error
	if s.ap != nil {
		err = s.ap.Close()
	}
	return errors.Join(err, s.pub.Close(), s.con.Close())
}
