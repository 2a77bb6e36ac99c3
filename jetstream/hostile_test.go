package jetstream_test

import (
	"context"
	"errors"
	"runtime/debug"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels"
)

// consumerIdle reports a consumer with nothing pending or unacknowledged.
func consumerIdle(j js.JetStream, stream, durable string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := j.Consumer(ctx, stream, durable)
	if err != nil {
		return false
	}
	i := c.CachedInfo()
	return i.NumPending == 0 && i.NumAckPending == 0
}

// Empty messages with a Status header (what nats.go's pull consumers take
// for a status of the server) published by a third party are handed to the
// adapter like any message and settled (here dead-lettered), and the valid
// messages behind them are processed at once, with MaxInFlight 1 and a
// MaxAckPending of 2.
func TestHostileStatusMessages(t *testing.T) {
	debug.SetMemoryLimit(256 << 20)
	defer debug.SetMemoryLimit(-1)
	url, _ := startServer(t)
	nc, j := jsOn(t, url)
	ctx := context.Background()
	o := fast
	o.MaxAckPending = 2
	var good, empty counter
	startPlugin(t, newAdapter(t, url, o), &service{Name: "h", Channels: channels.Channels{"hostile": {
		Group: "g", MaxInFlight: 1, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: "HOSTILE_DLQ"},
		Handler: func(_ context.Context, m *channels.Message) error {
			if len(m.Payload) == 0 {
				empty.inc()
				return channels.Permanent(errors.New("empty message"))
			}
			good.inc()
			return nil
		}}}})
	snd := startPlugin(t, newAdapter(t, url, o), nil)
	codes := []string{"100", "404", "408", "409", "503", "999", "400"}
	for _, code := range codes {
		m := nats.NewMsg("hostile")
		m.Header.Set("Status", code)
		m.Header.Set("Description", "Consumer Deleted")
		if _, err := j.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Shapes only a client writing the protocol itself can store: a status
	// on the header line (NATS/1.0 503), a header line without a colon
	// (nats.go cannot decode the block and hands the message over without
	// headers).
	rawPublishBlock(t, url, "hostile", "NATS/1.0 503\r\n\r\n", nil)
	rawPublishBlock(t, url, "hostile", "NATS/1.0 100 Idle Heartbeat\r\n\r\n", nil)
	rawPublishBlock(t, url, "hostile", "NATS/1.0\r\nno colon here\r\n\r\n", nil)
	codes = append(codes, "inline 503", "inline 100", "no colon")
	eventually(t, 5*time.Second, "hostile messages stored", func() bool { return streamMsgs(j, "hostile") >= len(codes) })
	start := time.Now()
	for i := range 5 {
		if err := snd.SendToChannel(ctx, "hostile", map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "the valid messages behind the hostile ones", func() bool { return good.get() == 5 })
	t.Logf("5 valid messages behind %d hostile ones processed in %s", len(codes), time.Since(start))
	eventually(t, 10*time.Second, "every hostile message dead-lettered", func() bool { return streamMsgs(j, "HOSTILE_DLQ") == len(codes) })
	eventually(t, 5*time.Second, "nothing pending", func() bool { return consumerIdle(j, "hostile", "g") })
	if n := empty.get(); n != len(codes) {
		t.Fatalf("the handler saw %d empty messages, want %d", n, len(codes))
	}
	// The dead letters are not themselves status-shaped.
	st, err := j.Stream(ctx, "HOSTILE_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= uint64(len(codes)); seq++ {
		rm, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if rm.Header.Get("Status") != "" {
			t.Fatalf("dead letter %d carries a Status header: %v", seq, rm.Header)
		}
	}
	_ = nc
}
