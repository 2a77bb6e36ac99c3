package amqp

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
)

// countingHandler counts the log records whose message contains one of
// the given texts.
type countingHandler struct {
	slog.Handler
	texts []string
	n     *atomic.Int64
	// show, when set, logs the first few records counted.
	show testing.TB
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, t := range h.texts {
		if strings.Contains(r.Message, t) {
			if n := h.n.Add(1); n <= 3 && h.show != nil {
				var attrs []string
				r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
				h.show.Logf("%s %v", r.Message, attrs)
			}
		}
	}
	return nil
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h countingHandler) WithGroup(string) slog.Handler            { return h }

// nested returns a header table nested depth deep.
func nested(depth int) amqp091.Table {
	t := amqp091.Table{"leaf": "x"}
	for range depth - 1 {
		t = amqp091.Table{"n": t}
	}
	return t
}

// publishRaw publishes one message with amqp091 to exchange, confirmed.
func publishRaw(t *testing.T, exchange string, p amqp091.Publishing) {
	t.Helper()
	ch := rawChannel(t, rawConn(t))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), exchange, "", false, false, p)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
		t.Fatalf("not confirmed: %v", err)
	}
}

// TestUnreadableHeadersBounded: a message whose header table amqp091 cannot
// read (nested 41 deep, or 9,000 entries) closes the consumer's connection
// on each delivery, before the adapter sees it. The group queue is a quorum
// queue with x-delivery-limit and a dead-letter exchange, so RabbitMQ
// dead-letters it after MaxDeliveries deliveries; the connection is dialed
// again with a growing backoff meanwhile (not in a tight loop), and the
// valid messages behind it are processed, with MaxInFlight 1.
func TestUnreadableHeadersBounded(t *testing.T) {
	needAMQP(t)
	for _, tc := range []struct {
		name    string
		headers amqp091.Table
	}{
		{"nested 41 deep", amqp091.Table{"deep": nested(41)}},
		{"array nested 41 deep", amqp091.Table{"deep": func() any {
			var v any = "leaf"
			for range 41 {
				v = []any{v}
			}
			return v
		}()}},
		{"array of 9000 entries", amqp091.Table{"wide": make([]any, 9000)}},
		{"9000 entries", func() amqp091.Table {
			w := amqp091.Table{}
			for i := range 9000 {
				w["k"+itoa(i)] = int32(i)
			}
			return amqp091.Table{"wide": w}
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, group := unique("hostile.table"), "g"
			dlq := ch + ".DLQ"
			cleanup(t, []string{group + "." + ch, dlq}, []string{ch, dlq})
			var lost atomic.Int64
			log := slog.New(countingHandler{texts: []string{"connection lost"}, n: &lost})
			got := &channelstest.Recorder{}
			const maxDeliveries = 3
			p, a := startPlugin(t, &service{Name: "svc", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 1,
				MaxRetries: 1, MaxDeliveries: maxDeliveries,
				DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: got.Handle}}},
				[]chamqp.Option{chamqp.WithReconnectBackoff(broker.ExponentialBackoff{Initial: 50 * time.Millisecond, Max: time.Second, Multiplier: 2})},
				channels.WithLogger(log))
			publishRaw(t, ch, amqp091.Publishing{Headers: tc.headers, MessageId: "hostile", Body: []byte(`"hostile"`),
				DeliveryMode: amqp091.Persistent})
			// The member sends the valid messages itself: its sends go on a
			// connection of their own, which the hostile message never reaches.
			pubConn := a.Connection()
			start := time.Now()
			for i := range 5 {
				if err := p.SendToChannel(context.Background(), ch, i); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 30*time.Second, "the 5 valid messages", func() bool { return got.Count() == 5 })
			took := time.Since(start)
			raw := rawChannel(t, rawConn(t))
			eventually(t, 10*time.Second, "the hostile message in the dead-letter queue", func() bool {
				q, err := raw.QueueDeclarePassive(dlq, true, false, false, false, nil)
				return err == nil && q.Messages == 1
			})
			q, err := rawChannel(t, rawConn(t)).QueueDeclarePassive(group+"."+ch, true, false, false, false, nil)
			if err != nil || q.Messages != 0 {
				t.Fatalf("group queue %+v %v", q, err)
			}
			t.Logf("valid messages processed %v after the hostile one; connections lost: %d", took.Round(time.Millisecond), lost.Load())
			if a.Connection() != pubConn || pubConn.IsClosed() {
				t.Errorf("the publishing connection was lost")
			}
			if n := lost.Load(); n > maxDeliveries+2 {
				t.Errorf("%d connections lost for one message with MaxDeliveries %d", n, maxDeliveries)
			}
		})
	}
}
