package kafka

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/kafka"
)

// linked is an adapter whose every connection (to the bootstrap brokers and
// to the addresses the brokers advertise) goes through a link-fault proxy.
func linked(t *testing.T, opts ...kafka.Option) (*kafka.Adapter, *linkfault.Link) {
	return linkedSends(t, false, opts...)
}

// linkedSends is linked; with direct, the group membership and the readers
// dial the broker directly: only sends and administrative requests go
// through the proxy.
func linkedSends(t *testing.T, direct bool, opts ...kafka.Option) (*kafka.Adapter, *linkfault.Link) {
	t.Helper()
	brokers := brokerenv.KafkaBrokers()
	if len(brokers) != 1 {
		t.Fatalf("the link-fault proxy maps one broker; CHANNELS_KAFKA_BROKERS has %d", len(brokers))
	}
	l := linkfault.New(t, brokers[0])
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, l.Addr())
	}
	tr := &kafkago.Transport{Dial: dial, DialTimeout: 2 * time.Second}
	d := &kafkago.Dialer{DialFunc: dial, Timeout: 2 * time.Second}
	if direct {
		d = &kafkago.Dialer{Timeout: 2 * time.Second}
	}
	a, err := kafka.New(kafkaURL(), append([]kafka.Option{kafka.WithTransport(tr, d), kafka.WithChannelOptions(timings)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return a, l
}

// readAll reads partition 0 of topic from its beginning until a message
// with value last, and returns the values read.
func readAll(t *testing.T, topic, last string) []string {
	t.Helper()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokerenv.KafkaBrokers(), Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var vals []string
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading %s after %v: %v", topic, vals, err)
		}
		vals = append(vals, string(m.Value))
		if string(m.Value) == last {
			return vals
		}
	}
}

// TestAbandonedSendsAreNotWritten: while a partition's request is slowed
// by a 2 s latency on the link, five sends queued behind it give up at
// their 300 ms deadline; they are taken out of the queue and never
// written. Only the send in flight at its deadline may still be written,
// and it says so.
func TestAbandonedSendsAreNotWritten(t *testing.T) {
	needKafka(t)
	a, l := linked(t)
	p := channelstest.StartPlugin(t, a, nil)
	ch := unique("send.abandoned")
	at0 := kafka.WithPartition(0)
	if err := p.SendToChannel(context.Background(), ch, "warm", at0); err != nil {
		t.Fatal(err)
	}
	l.Latency(2 * time.Second)
	inflight := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		inflight <- p.SendToChannel(ctx, ch, "inflight", at0)
	}()
	// The first send is in flight before the others queue behind it.
	eventually(t, 10*time.Second, "the first send in flight", func() bool { return a.ProduceRequestsInFlight() == 1 })
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := p.SendToChannel(ctx, ch, "abandoned", at0); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 5 {
		t.Fatalf("%d of 5 sends failed by their deadline", failed.Load())
	}
	inflightErr := <-inflight
	l.Heal()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.SendToChannel(ctx, ch, "last", at0); err != nil {
		t.Fatal(err)
	}
	vals := readAll(t, ch, `"last"`)
	abandoned := 0
	for _, v := range vals {
		if v == `"abandoned"` {
			abandoned++
		}
	}
	t.Logf("written: %v", vals)
	if abandoned != 0 {
		t.Fatalf("%d of 5 abandoned sends were written", abandoned)
	}
	if inflightErr == nil || !strings.Contains(inflightErr.Error(), "may still be written") {
		t.Fatalf("the send in flight at its deadline: %v", inflightErr)
	}
}

// TestSendBufferBoundsTheQueue: with a send buffer of 64 KiB and the link
// frozen, sends wait for room and fail by their deadline instead of
// queueing without a bound.
func TestSendBufferBoundsTheQueue(t *testing.T) {
	needKafka(t)
	a, l := linked(t, kafka.WithSendBuffer(64<<10))
	p := channelstest.StartPlugin(t, a, nil)
	ch := unique("send.buffer")
	at0 := kafka.WithPartition(0)
	if err := p.SendToChannel(context.Background(), ch, "warm", at0); err != nil {
		t.Fatal(err)
	}
	l.Freeze()
	defer l.Heal()
	payload := strings.Repeat("x", 16<<10)
	var full atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if err := p.SendToChannel(ctx, ch, payload, at0); err != nil && strings.Contains(err.Error(), "send buffer is full") {
				full.Add(1)
			}
		}()
	}
	wg.Wait()
	if full.Load() < 10 {
		t.Fatalf("%d of 20 sends of 16 KiB found the 64 KiB buffer full", full.Load())
	}
}

// TestRetryCopyInFlightAtTheSettleDeadline: the write of a retry copy
// takes longer than the settle timeout (6 s of latency each way); the
// message runs once more in all: either the copy or a run in this
// process, never both.
func TestRetryCopyInFlightAtTheSettleDeadline(t *testing.T) {
	needKafka(t)
	a, l := linkedSends(t, true)
	ch := unique("retry.inflight")
	var runs atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	first := make(chan struct{})
	p := channelstest.StartPlugin(t, a, &service{Name: "retry", Channels: channels.Channels{ch: {MaxInFlight: 1, MaxRetries: 3,
		Backoff: broker.ConstantBackoff(10 * time.Millisecond), AdapterOptions: []any{opts},
		Handler: func(context.Context, *channels.Message) error {
			if runs.Add(1) == 1 {
				close(first)
				l.Latency(6 * time.Second) // the copy's write outlasts the settle timeout
				return errors.New("the first run fails")
			}
			return nil
		}}}})
	if err := p.SendToChannel(context.Background(), ch, "once"); err != nil {
		t.Fatal(err)
	}
	<-first
	eventually(t, 60*time.Second, "the retry run", func() bool { return runs.Load() >= 2 })
	l.Heal()
	consistently(t, 15*time.Second, "the retry run once", func() bool { return runs.Load() == 2 })
}

// TestDeadLetterInFlightAtTheSettleDeadline: the write of a dead letter
// takes longer than the settle timeout (14 s of latency); it is
// written once: the message is not kept and dead-lettered a second time.
func TestDeadLetterInFlightAtTheSettleDeadline(t *testing.T) {
	needKafka(t)
	a, l := linkedSends(t, true)
	ch, dlq := unique("dlq.inflight"), unique("dlq.inflight.DLQ")
	dead := &channelstest.Recorder{}
	startPlugin(t, &service{Name: "dlq-reader", Channels: channels.Channels{dlq: channels.On(dead.Handle)}})
	var runs atomic.Int32
	opts := timings
	opts.Topic.Partitions = 1
	p := channelstest.StartPlugin(t, a, &service{Name: "dl", Channels: channels.Channels{ch: {MaxInFlight: 1, MaxRetries: channels.NoRetries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, AdapterOptions: []any{opts},
		Handler: func(context.Context, *channels.Message) error {
			if runs.Add(1) == 1 {
				l.Latency(14 * time.Second) // the dead letter's write outlasts the settle timeout
			}
			return errors.New("fails for good")
		}}}})
	if err := p.SendToChannel(context.Background(), ch, "once"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the dead letter written", func() bool { return dead.Count() >= 1 })
	l.Heal()
	consistently(t, 10*time.Second, "one dead letter", func() bool { return dead.Count() == 1 && runs.Load() == 1 })
}

// TestDrainEndsTheDeadLetterWait: when a stop's deadline passes while a
// dead letter is being written (14 s of latency), the settlement stops
// waiting for the write (the message stays unsettled: at-least-once).
func TestDrainEndsTheDeadLetterWait(t *testing.T) {
	needKafka(t)
	a, l := linkedSends(t, true)
	ch, dlq := unique("dlq.drain"), unique("dlq.drain.DLQ")
	opts := timings
	opts.Topic.Partitions = 1
	var runs atomic.Int32
	p, err := channels.New(channels.WithAdapter(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Register(&service{Name: "dldrain", Channels: channels.Channels{ch: {MaxInFlight: 1, MaxRetries: channels.NoRetries,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, AdapterOptions: []any{opts},
		Handler: func(context.Context, *channels.Message) error {
			if runs.Add(1) == 1 {
				l.Latency(14 * time.Second) // the dead letter's write outlasts the stop
			}
			return errors.New("fails for good")
		}}}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer l.Heal()
	if err := p.SendToChannel(context.Background(), ch, "once"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the dead letter in flight", func() bool { return a.ProduceRequestsInFlight() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.Stop(ctx)
	// The settlement waiting for the write ends with the drain's deadline,
	// not with the write (14 s on).
	eventually(t, 3*time.Second, "no dead-letter wait left after the stop", func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "kafka.(*delivery).DeadLetter")
	})
}
