package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
)

// benchAMQP measures the AMQP adapter next to a raw amqp091-go loop doing
// the same work: persistent messages on a durable fanout exchange and
// queue, every send waiting for its publisher confirm, a consumer with
// prefetch = MaxInFlight running up to MaxInFlight handlers and acking each
// message. The raw senders share as many confirm-mode channels as the
// adapter's pool (chamqp.DefaultPublisherChannels).
func benchAMQP(ctx context.Context, url string, pings, n, senders int) ([]result, error) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("rabbitmq unreachable: %w (start it with `make services`)", err)
	}
	defer conn.Close()
	var rows []result
	libLat, err := amqpLibLatency(ctx, url, pings)
	if err != nil {
		return nil, err
	}
	rawLat, err := amqpRawLatency(ctx, conn, pings)
	if err != nil {
		return nil, err
	}
	rows = append(rows,
		result{name: "latency p50 (one way)", lib: percentile(libLat, 0.5), raw: percentile(rawLat, 0.5), unit: "ms"},
		result{name: "latency p99 (one way)", lib: percentile(libLat, 0.99), raw: percentile(rawLat, 0.99), unit: "ms"})
	for _, mif := range []int{10, 100} {
		lib, err := amqpLibThroughput(ctx, url, n, senders, mif)
		if err != nil {
			return nil, err
		}
		rw, err := amqpRawThroughput(ctx, conn, n, senders, mif)
		if err != nil {
			return nil, err
		}
		rows = append(rows, result{name: fmt.Sprintf("throughput, MaxInFlight %d", mif), lib: lib, raw: rw, unit: "msg/s", higherWin: true})
	}
	return rows, nil
}

func startAMQP(ctx context.Context, url string, s *benchService) (*channels.Plugin, error) {
	a, err := chamqp.New(url)
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

// deleteAMQP removes what a run declared.
func deleteAMQP(conn *amqp091.Connection, queue, exchange string) {
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = ch.Close()
	}
}

func amqpLibLatency(ctx context.Context, url string, pings int) ([]time.Duration, error) {
	ch := name("latency")
	got := make(chan time.Duration, 1)
	s := &benchService{Name: "bench", Channels: channels.Channels{ch: channels.On(channels.Typed(func(ctx context.Context, p ping, m *channels.Message) error {
		got <- time.Duration(time.Now().UnixNano() - p.Sent)
		return nil
	}))}}
	consumer, err := startAMQP(ctx, url, s)
	if err != nil {
		return nil, err
	}
	defer consumer.Stop(ctx)
	producer, err := startAMQP(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	defer producer.Stop(ctx)
	if c, err := amqp091.Dial(url); err == nil {
		defer func() { deleteAMQP(c, "bench."+ch, ch); c.Close() }()
	}
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

// amqpDeclare declares a durable fanout exchange and a durable queue bound
// to it, as the adapter does.
func amqpDeclare(conn *amqp091.Connection, kind string) (string, string, error) {
	ex := name(kind)
	q := "bench." + ex
	ch, err := conn.Channel()
	if err != nil {
		return "", "", err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(ex, "fanout", true, false, false, false, nil); err != nil {
		return "", "", err
	}
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return "", "", err
	}
	return ex, q, ch.QueueBind(q, "", ex, false, nil)
}

func amqpRawLatency(ctx context.Context, conn *amqp091.Connection, pings int) ([]time.Duration, error) {
	ex, q, err := amqpDeclare(conn, "raw-latency")
	if err != nil {
		return nil, err
	}
	defer deleteAMQP(conn, q, ex)
	cch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer cch.Close()
	if err := cch.Qos(1, 0, false); err != nil {
		return nil, err
	}
	deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	pch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer pch.Close()
	if err := pch.Confirm(false); err != nil {
		return nil, err
	}
	got := make(chan time.Duration, 1)
	go func() {
		for d := range deliveries {
			var p ping
			_ = json.Unmarshal(d.Body, &p)
			got <- time.Duration(time.Now().UnixNano() - p.Sent)
			_ = d.Ack(false)
		}
	}()
	out := make([]time.Duration, 0, pings)
	for i := 0; i < pings+100; i++ {
		b, _ := json.Marshal(ping{Sent: time.Now().UnixNano()})
		dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, ex, "", false, false,
			amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: b})
		if err != nil {
			return nil, err
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return nil, fmt.Errorf("raw publish not confirmed: %v", err)
		}
		d := <-got
		if i >= 100 {
			out = append(out, d)
		}
	}
	return out, nil
}

func amqpLibThroughput(ctx context.Context, url string, n, senders, mif int) (float64, error) {
	ch := name("throughput")
	var count atomic.Int64
	done := make(chan struct{})
	s := &benchService{Name: "bench", Channels: channels.Channels{ch: {MaxInFlight: mif, Handler: func(ctx context.Context, m *channels.Message) error {
		if count.Add(1) == int64(n) {
			close(done)
		}
		return nil
	}}}}
	consumer, err := startAMQP(ctx, url, s)
	if err != nil {
		return 0, err
	}
	defer consumer.Stop(ctx)
	producer, err := startAMQP(ctx, url, nil)
	if err != nil {
		return 0, err
	}
	defer producer.Stop(ctx)
	if c, err := amqp091.Dial(url); err == nil {
		defer func() { deleteAMQP(c, "bench."+ch, ch); c.Close() }()
	}
	start := time.Now()
	if err := fanOut(n, senders, func(i int) error { return producer.SendToChannel(ctx, ch, map[string]int{"count": i}) }); err != nil {
		return 0, err
	}
	<-done
	return float64(n) / time.Since(start).Seconds(), nil
}

func amqpRawThroughput(ctx context.Context, conn *amqp091.Connection, n, senders, mif int) (float64, error) {
	ex, q, err := amqpDeclare(conn, "raw-throughput")
	if err != nil {
		return 0, err
	}
	defer deleteAMQP(conn, q, ex)
	cch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	defer cch.Close()
	if err := cch.Qos(mif, 0, false); err != nil {
		return 0, err
	}
	deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	go func() { // up to mif handlers at once, each acking its message
		var count atomic.Int64
		slots := make(chan struct{}, mif)
		for d := range deliveries {
			slots <- struct{}{}
			go func() {
				_ = d.Body
				_ = d.Ack(false)
				<-slots
				if count.Add(1) == int64(n) {
					close(done)
				}
			}()
		}
	}()
	pubs := make([]*amqp091.Channel, chamqp.DefaultPublisherChannels)
	for i := range pubs {
		if pubs[i], err = conn.Channel(); err != nil {
			return 0, err
		}
		defer pubs[i].Close()
		if err := pubs[i].Confirm(false); err != nil {
			return 0, err
		}
	}
	var next atomic.Uint32
	start := time.Now()
	if err := fanOut(n, senders, func(i int) error {
		pch := pubs[int(next.Add(1))%len(pubs)]
		dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, ex, "", false, false,
			amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: fmt.Appendf(nil, `{"count":%d}`, i)})
		if err != nil {
			return err
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("raw publish not confirmed: %v", err)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	<-done
	return float64(n) / time.Since(start).Seconds(), nil
}
