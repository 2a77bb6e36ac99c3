package amqp

import (
	"context"
	"log/slog"
	"net/url"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest/linkfault"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// toolQueue declares a classic queue holding the given messages (deleted
// at the end of the test) on the test RabbitMQ.
func toolQueue(t *testing.T, msgs ...amqp091.Publishing) string {
	t.Helper()
	name := "test.tool." + time.Now().Format("150405.000000000")
	c, err := amqp091.Dial(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := c.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
		}
		_ = c.Close()
	})
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirm("", name, true, false, m)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			t.Fatalf("not confirmed: %v", err)
		}
	}
	return name
}

// linkedToolAdapter is a connected adapter whose connections go through a
// link-fault proxy.
func linkedToolAdapter(t *testing.T) (*Adapter, *linkfault.Link) {
	t.Helper()
	brokerenv.Need(t, "amqp", brokerenv.PingAMQP)
	u, err := url.Parse(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	link := linkfault.New(t, u.Host)
	u.Host = link.Addr()
	a, err := New(u.String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, broker.Env{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		link.Heal()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return a, link
}

// TestRemoveDeadLettersUnconfirmed: a removal whose channel.close gets no
// close-ok (the link froze after the acknowledgement was written) counts
// nothing and says so, instead of reporting a removal RabbitMQ may never
// have processed.
func TestRemoveDeadLettersUnconfirmed(t *testing.T) {
	a, link := linkedToolAdapter(t)
	q := toolQueue(t, amqp091.Publishing{MessageId: "m", Body: []byte("x")})
	var id string
	if err := a.BrowseDeadLetters(context.Background(), q, func(m *broker.StoredMessage) bool { id = m.ID; return true }); err != nil || id == "" {
		t.Fatalf("browse: %q, %v", id, err)
	}
	afterToolAck = link.Freeze
	t.Cleanup(func() { afterToolAck = nil })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	n, err := a.RemoveDeadLetters(ctx, q, id)
	if n != 0 || err == nil {
		t.Fatalf("removal on a frozen link: %d, %v; want 0 and an error", n, err)
	}
	t.Logf("error: %v", err)
}
