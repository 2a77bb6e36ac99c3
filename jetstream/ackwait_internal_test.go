package jetstream

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"
	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// lateConsumer is a consumer whose reads show a new AckWait only from
// applied on (a server applying an update late, as a cluster may).
type lateConsumer struct {
	js.Consumer
	applied  atomic.Int64 // unix ns
	old, new time.Duration
	reads    atomic.Int32
}

func (c *lateConsumer) Info(context.Context) (*js.ConsumerInfo, error) {
	c.reads.Add(1)
	w := c.old
	if time.Now().UnixNano() >= c.applied.Load() {
		w = c.new
	}
	return &js.ConsumerInfo{Config: js.ConsumerConfig{AckWait: w}}, nil
}

// An update request lowering AckWait lowers the in-progress interval at
// once from the request's body, even when the server applies it after the
// first reads of the consumer; the interval holds once the reads show it.
func TestInProgressLoweredFromUpdateRequest(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cons := &lateConsumer{old: 30 * time.Second, new: 3 * time.Second}
	cons.applied.Store(time.Now().Add(time.Hour).UnixNano())
	s := &subscription{c: &conn{nc: nc}, ch: &broker.Channel{Name: "c", Group: "g"}, stream: "S", log: slog.Default(),
		running: map[*delivery]struct{}{}, wake: make(chan struct{}, 1), fetchCtx: context.Background(), cons: cons}
	s.info.Store(&js.ConsumerInfo{Config: js.ConsumerConfig{AckWait: cons.old}})
	s.interval.Store(int64(10 * time.Second))
	s.watch()
	defer func() {
		for _, w := range s.watches {
			_ = w.Unsubscribe()
		}
	}()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"stream_name": "S", "config": map[string]any{"durable_name": "g", "ack_wait": int64(cons.new)}})
	cons.applied.Store(time.Now().Add(300 * time.Millisecond).UnixNano()) // after the first reads
	if err := nc.Publish("$JS.API.CONSUMER.CREATE.S.g", body); err != nil {
		t.Fatal(err)
	}
	g := gomega.NewWithT(t)
	want := int64(time.Second) // AckWait 3 s / 3
	g.Eventually(s.interval.Load).WithTimeout(time.Second).WithPolling(10*time.Millisecond).Should(gomega.Equal(want), "interval lowered")
	g.Eventually(cons.reads.Load).WithTimeout(5*time.Second).Should(gomega.BeNumerically(">=", 3), "the consumer read again")
	g.Consistently(s.interval.Load).WithTimeout(2500*time.Millisecond).Should(gomega.Equal(want), "interval kept")
}
