package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/redis"
)

type benchService struct {
	Name     string
	Channels channels.Channels
}

func benchRedis(ctx context.Context, url string, pings, n, senders int) ([]result, error) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	raw := goredis.NewClient(opts)
	defer raw.Close()
	if err := raw.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis unreachable at %s: %w (start it with `make services`)", url, err)
	}
	var rows []result

	libLat, err := libLatency(ctx, url, pings)
	if err != nil {
		return nil, err
	}
	rawLat, err := rawLatency(ctx, raw, pings)
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		result{name: "latency p50 (one way)", lib: percentile(libLat, 0.5), raw: percentile(rawLat, 0.5), unit: "ms"},
		result{name: "latency p99 (one way)", lib: percentile(libLat, 0.99), raw: percentile(rawLat, 0.99), unit: "ms"})

	ap, err := raw.AutoPipeline()
	if err != nil {
		return nil, err
	}
	for _, pipelined := range []bool{false, true} {
		for _, mif := range []int{10, 100} {
			var libOpts []redis.Option
			var pub goredis.Cmdable = raw
			label := fmt.Sprintf("throughput, MaxInFlight %d", mif)
			if pipelined {
				libOpts, pub = []redis.Option{redis.WithAutoPipeline()}, ap
				label += ", autopipelined sends"
			}
			lib, err := libThroughput(ctx, url, n, senders, mif, libOpts...)
			if err != nil {
				return nil, err
			}
			rw, err := rawThroughput(ctx, raw, pub, n, senders, mif)
			if err != nil {
				return nil, err
			}
			rows = append(rows, result{name: label, lib: lib, raw: rw, unit: "msg/s", higherWin: true})
		}
	}
	return rows, nil
}

func name(kind string) string {
	return fmt.Sprintf("bench.%s.%d.%d", kind, os.Getpid(), time.Now().UnixNano())
}

func startLib(ctx context.Context, url string, s *benchService, opts ...redis.Option) (*channels.Plugin, error) {
	a, err := redis.New(url, opts...)
	if err != nil {
		return nil, err
	}
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		return nil, err
	}
	if s != nil {
		if err := p.Register(s); err != nil {
			return nil, err
		}
	}
	return p, p.Start(ctx)
}

type ping struct {
	Sent int64 `json:"sent"`
}

func libLatency(ctx context.Context, url string, pings int) ([]time.Duration, error) {
	ch := name("latency")
	got := make(chan time.Duration, 1)
	s := &benchService{Name: "bench", Channels: channels.Channels{ch: channels.On(channels.Typed(func(ctx context.Context, p ping, m *channels.Message) error {
		got <- time.Duration(time.Now().UnixNano() - p.Sent)
		return nil
	}))}}
	consumer, err := startLib(ctx, url, s)
	if err != nil {
		return nil, err
	}
	defer consumer.Stop(ctx)
	producer, err := startLib(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer producer.Stop(ctx)
	out := make([]time.Duration, 0, pings)
	for i := 0; i < pings+100; i++ { // the first 100 warm up
		if err := producer.SendToChannel(ctx, ch, ping{Sent: time.Now().UnixNano()}); err != nil {
			return nil, err
		}
		d := <-got
		if i >= 100 {
			out = append(out, d)
		}
	}
	return out, nil
}

func rawLatency(ctx context.Context, c *goredis.Client, pings int) ([]time.Duration, error) {
	stream, group := name("raw-latency"), "bench"
	if err := c.XGroupCreateMkStream(ctx, stream, group, "$").Err(); err != nil {
		return nil, err
	}
	defer c.Del(ctx, stream)
	reader := goredis.NewClient(c.Options())
	defer reader.Close()
	got := make(chan time.Duration, 1)
	errc := make(chan error, 1)
	go func() { // the consumer: blocked in XREADGROUP before each send, as the library's is
		for i := 0; i < pings+100; i++ {
			res, err := reader.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{stream, ">"}, Count: 1, Block: 5 * time.Second}).Result()
			if err != nil {
				errc <- err
				return
			}
			m := res[0].Messages[0]
			var p ping
			_ = json.Unmarshal([]byte(m.Values["payload"].(string)), &p)
			got <- time.Duration(time.Now().UnixNano() - p.Sent)
			if err := reader.XAck(ctx, stream, group, m.ID).Err(); err != nil {
				errc <- err
				return
			}
		}
	}()
	out := make([]time.Duration, 0, pings)
	for i := 0; i < pings+100; i++ {
		b, _ := json.Marshal(ping{Sent: time.Now().UnixNano()})
		if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"payload", b}}).Err(); err != nil {
			return nil, err
		}
		select {
		case d := <-got:
			if i >= 100 {
				out = append(out, d)
			}
		case err := <-errc:
			return nil, err
		}
	}
	return out, nil
}

func libThroughput(ctx context.Context, url string, n, senders, mif int, opts ...redis.Option) (float64, error) {
	ch := name("throughput")
	var count atomic.Int64
	done := make(chan struct{})
	s := &benchService{Name: "bench", Channels: channels.Channels{ch: {MaxInFlight: mif, Handler: func(ctx context.Context, m *channels.Message) error {
		if count.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}}}}
	consumer, err := startLib(ctx, url, s)
	if err != nil {
		return 0, err
	}
	defer consumer.Stop(ctx)
	producer, err := startLib(ctx, url, nil, opts...)
	if err != nil {
		return 0, err
	}
	defer producer.Stop(ctx)
	start := time.Now()
	if err := fanOut(n, senders, func(i int) error { return producer.SendToChannel(ctx, ch, map[string]int{"count": i}) }); err != nil {
		return 0, err
	}
	<-done
	return float64(n) / time.Since(start).Seconds(), nil
}

func rawThroughput(ctx context.Context, c *goredis.Client, pub goredis.Cmdable, n, senders, mif int) (float64, error) {
	stream, group := name("raw-throughput"), "bench"
	if err := c.XGroupCreateMkStream(ctx, stream, group, "$").Err(); err != nil {
		return 0, err
	}
	defer c.Del(ctx, stream)
	reader := goredis.NewClient(c.Options())
	defer reader.Close()
	done := make(chan error, 1)
	go func() {
		got := 0
		for got < n {
			res, err := reader.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{stream, ">"},
				Count: int64(mif), Block: time.Second}).Result()
			if err != nil && err != goredis.Nil {
				done <- err
				return
			}
			if len(res) == 0 {
				continue
			}
			ids := make([]string, len(res[0].Messages))
			var wg sync.WaitGroup
			for i, m := range res[0].Messages { // up to mif handlers at once, as the library runs them
				ids[i] = m.ID
				wg.Add(1)
				go func() { defer wg.Done(); _ = m.Values["payload"] }()
			}
			wg.Wait()
			if err := c.XAck(ctx, stream, group, ids...).Err(); err != nil {
				done <- err
				return
			}
			got += len(ids)
		}
		done <- nil
	}()
	start := time.Now()
	if err := fanOut(n, senders, func(i int) error {
		return pub.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"payload", fmt.Sprintf(`{"count":%d}`, i)}}).Err()
	}); err != nil {
		return 0, err
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// fanOut runs send(i) for i in [0,n) from `senders` goroutines.
func fanOut(n, senders int, send func(int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := send(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
