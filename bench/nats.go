package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/jetstream"
)

// benchNATS measures the jetstream adapter next to a raw nats.go jetstream
// loop on the same server: async publishes, and a pull consumer fetching as
// many messages as it has free handlers, acking each one.
func benchNATS(ctx context.Context, url string, pings, n, senders int) ([]result, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, fmt.Errorf("nats unreachable at %s: %w (start it with `make services`)", url, err)
	}
	defer nc.Close()
	j, err := js.New(nc)
	if err != nil {
		return nil, err
	}
	newAdapter := func(o jetstream.ChannelOptions) (*jetstream.Adapter, error) {
		return jetstream.New(url, jetstream.WithChannelOptions(o))
	}
	var rows []result
	libLat, err := natsLibLatency(ctx, newAdapter, pings)
	if err != nil {
		return nil, err
	}
	rawLat, err := natsRawLatency(ctx, url, j, pings)
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		result{name: "latency p50 (one way)", lib: percentile(libLat, 0.5), raw: percentile(rawLat, 0.5), unit: "ms"},
		result{name: "latency p99 (one way)", lib: percentile(libLat, 0.99), raw: percentile(rawLat, 0.99), unit: "ms"})
	for _, ackSync := range []bool{false, true} {
		for _, mif := range []int{10, 100} {
			label := fmt.Sprintf("throughput, MaxInFlight %d", mif)
			if ackSync {
				label += ", AckSync"
			}
			lib, err := natsLibThroughput(ctx, newAdapter, jetstream.ChannelOptions{AckSync: ackSync}, n, senders, mif)
			if err != nil {
				return nil, err
			}
			raw, err := natsRawThroughput(ctx, url, j, n, senders, mif, ackSync)
			if err != nil {
				return nil, err
			}
			rows = append(rows, result{name: label, lib: lib, raw: raw, unit: "msg/s", higherWin: true})
		}
	}
	// For reference: the raw loop with one goroutine publishing without
	// waiting for each ack, against the library's concurrent senders.
	lib, err := natsLibThroughput(ctx, newAdapter, jetstream.ChannelOptions{}, n, senders, 100)
	if err != nil {
		return nil, err
	}
	raw, err := natsRawThroughput(ctx, url, j, n, 0, 100, false)
	if err != nil {
		return nil, err
	}
	rows = append(rows, result{name: "throughput, MaxInFlight 100, raw: one async publisher", lib: lib, raw: raw, unit: "msg/s", higherWin: true})
	return rows, nil
}

func startNATSLib(ctx context.Context, newAdapter func(jetstream.ChannelOptions) (*jetstream.Adapter, error), o jetstream.ChannelOptions, s *benchService) (*channels.Plugin, error) {
	a, err := newAdapter(o)
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

func natsLibLatency(ctx context.Context, newAdapter func(jetstream.ChannelOptions) (*jetstream.Adapter, error), pings int) ([]time.Duration, error) {
	ch := name("latency")
	got := make(chan time.Duration, 1)
	s := &benchService{Name: "bench", Channels: channels.Channels{ch: channels.On(channels.Typed(func(ctx context.Context, p ping, m *channels.Message) error {
		got <- time.Duration(time.Now().UnixNano() - p.Sent)
		return nil
	}))}}
	consumer, err := startNATSLib(ctx, newAdapter, jetstream.ChannelOptions{}, s)
	if err != nil {
		return nil, err
	}
	defer consumer.Stop(ctx)
	producer, err := startNATSLib(ctx, newAdapter, jetstream.ChannelOptions{}, nil)
	if err != nil {
		return nil, err
	}
	defer producer.Stop(ctx)
	out := make([]time.Duration, 0, pings)
	for i := 0; i < pings+100; i++ {
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

// natsRawStream creates a stream and a durable pull consumer as the adapter
// does, and removes the stream at the end.
func natsRawStream(ctx context.Context, j js.JetStream, kind string, mif int) (string, js.Consumer, func(), error) {
	subject := name(kind)
	stream := jetstream.StreamName(subject)
	if _, err := j.CreateStream(ctx, js.StreamConfig{Name: stream, Subjects: []string{subject}}); err != nil {
		return "", nil, nil, err
	}
	cons, err := j.CreateConsumer(ctx, stream, js.ConsumerConfig{Durable: "bench", AckPolicy: js.AckExplicitPolicy,
		DeliverPolicy: js.DeliverNewPolicy, FilterSubject: subject, MaxAckPending: max(1000, mif), MaxDeliver: -1})
	if err != nil {
		return "", nil, nil, err
	}
	return subject, cons, func() { _ = j.DeleteStream(context.Background(), stream) }, nil
}

func natsRawLatency(ctx context.Context, url string, j js.JetStream, pings int) ([]time.Duration, error) {
	subject, cons, drop, err := natsRawStream(ctx, j, "raw-latency", 1)
	if err != nil {
		return nil, err
	}
	defer drop()
	// The consumer has its own connection, as the library's does.
	cnc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer cnc.Close()
	cj, _ := js.New(cnc)
	ccons, err := cj.Consumer(ctx, cons.CachedInfo().Stream, "bench")
	if err != nil {
		return nil, err
	}
	got := make(chan time.Duration, 1)
	errc := make(chan error, 1)
	go func() { // blocked in a pull before each send, as the library's consumer is
		for i := 0; i < pings+100; {
			batch, err := ccons.Fetch(1, js.FetchMaxWait(5*time.Second))
			if err != nil {
				errc <- err
				return
			}
			for m := range batch.Messages() {
				var p ping
				_ = json.Unmarshal(m.Data(), &p)
				got <- time.Duration(time.Now().UnixNano() - p.Sent)
				_ = m.Ack()
				i++
			}
		}
	}()
	out := make([]time.Duration, 0, pings)
	for i := 0; i < pings+100; i++ {
		b, _ := json.Marshal(ping{Sent: time.Now().UnixNano()})
		if _, err := j.Publish(ctx, subject, b); err != nil {
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

func natsLibThroughput(ctx context.Context, newAdapter func(jetstream.ChannelOptions) (*jetstream.Adapter, error), o jetstream.ChannelOptions, n, senders, mif int) (float64, error) {
	ch := name("throughput")
	var count atomic.Int64
	done := make(chan struct{})
	s := &benchService{Name: "bench", Channels: channels.Channels{ch: {MaxInFlight: mif, Handler: func(ctx context.Context, m *channels.Message) error {
		if count.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}}}}
	consumer, err := startNATSLib(ctx, newAdapter, o, s)
	if err != nil {
		return 0, err
	}
	defer consumer.Stop(ctx)
	producer, err := startNATSLib(ctx, newAdapter, o, nil)
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

// natsRawThroughput: senders > 0 concurrent senders each publish
// asynchronously and wait for their message's ack (what a send of the
// library promises); senders == 0: one goroutine publishes everything
// asynchronously and waits for all the acks at the end (a fire hose, for
// reference).
func natsRawThroughput(ctx context.Context, url string, j js.JetStream, n, senders, mif int, ackSync bool) (float64, error) {
	subject, cons, drop, err := natsRawStream(ctx, j, "raw-throughput", mif)
	if err != nil {
		return 0, err
	}
	defer drop()
	cnc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer cnc.Close()
	cj, _ := js.New(cnc)
	ccons, err := cj.Consumer(ctx, cons.CachedInfo().Stream, "bench")
	if err != nil {
		return 0, err
	}
	finished := make(chan struct{}) // closed by the n-th handler
	fetchErr := make(chan error, 1)
	stop, cancelStop := context.WithCancel(ctx)
	defer cancelStop()
	go func() {
		sem := make(chan struct{}, mif) // up to mif handlers at once, as the library runs them
		var got atomic.Int64
		for stop.Err() == nil {
			sem <- struct{}{} // wait for one free handler, then ask for as many as are free
			free := cap(sem) - len(sem) + 1
			<-sem
			fctx, cancel := context.WithTimeout(stop, time.Second)
			batch, err := ccons.Fetch(free, js.FetchContext(fctx))
			if err != nil {
				cancel()
				if stop.Err() == nil {
					fetchErr <- err
				}
				return
			}
			for m := range batch.Messages() {
				sem <- struct{}{}
				go func() {
					_ = m.Data()
					if ackSync {
						_ = m.DoubleAck(ctx)
					} else {
						_ = m.Ack()
					}
					if got.Add(1) == int64(n) {
						close(finished)
					}
					<-sem
				}()
			}
			cancel()
		}
	}()
	start := time.Now()
	if senders > 0 {
		if err := fanOut(n, senders, func(i int) error {
			f, err := j.PublishAsync(subject, []byte(fmt.Sprintf(`{"count":%d}`, i)))
			if err != nil {
				return err
			}
			select {
			case <-f.Ok():
				return nil
			case err := <-f.Err():
				return err
			}
		}); err != nil {
			return 0, err
		}
	} else {
		for i := range n {
			if _, err := j.PublishAsync(subject, []byte(fmt.Sprintf(`{"count":%d}`, i))); err != nil {
				return 0, err
			}
		}
		select {
		case <-j.PublishAsyncComplete():
		case <-time.After(time.Minute):
			return 0, fmt.Errorf("raw async publishes not acknowledged")
		}
	}
	select {
	case <-finished:
	case err := <-fetchErr:
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
