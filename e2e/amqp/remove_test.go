package amqp

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// exists reports whether a queue (or, with exchange, an exchange) exists.
func exists(t *testing.T, name string, exchange bool) bool {
	t.Helper()
	ch := rawChannel(t, rawConn(t))
	var err error
	if exchange {
		err = ch.ExchangeDeclarePassive(name, "fanout", true, false, false, false, nil)
	} else {
		_, err = ch.QueueDeclarePassive(name, true, false, false, false, nil)
	}
	var ae *amqp091.Error
	if err != nil && (!errors.As(err, &ae) || ae.Code != amqp091.NotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// TestRemoveChannel: RemoveChannel deletes the channel's exchange, the
// queues of the groups the adapter subscribed (with their retry queues),
// and the queue named like the channel; RemoveGroup deletes the queue of a
// group it never subscribed; Purge empties a queue; removing what does not
// exist is no error. A group the adapter still consumes stops there: its
// consumer does not declare the queue again.
func TestRemoveChannel(t *testing.T) {
	needAMQP(t)
	ch, dlq := unique("remove.topic"), unique("remove.DLQ")
	queue, other := "g."+ch, "other."+ch
	retry := chamqp.RetryQueueName(queue, 50*time.Millisecond)
	cleanup(t, []string{queue, other, retry, dlq}, []string{ch, dlq})
	a, err := chamqp.New(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	p := startPluginOn(t, a, &service{Name: "svc", Channels: channels.Channels{ch: {Group: "g", MaxRetries: 1,
		DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
		Handler:       func(context.Context, *channels.Message) error { runs.Add(1); return errors.New("fail") }}}})
	raw := rawChannel(t, rawConn(t))
	if _, err := raw.QueueDeclare(other, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.SendToChannel(context.Background(), ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the dead letter", func() bool {
		q, err := rawChannel(t, rawConn(t)).QueueDeclarePassive(dlq, true, false, false, false, nil)
		return err == nil && q.Messages == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Removed while consumed: the consumer stops and does not declare the
	// queue again.
	if err := a.RemoveGroup(ctx, ch, "g"); err != nil {
		t.Fatal(err)
	}
	consistently(t, 2*time.Second, "the group queue stays removed", func() bool { return !exists(t, queue, false) })
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// A plugin of its own, with no subscription, on the same adapter.
	startPluginOn(t, a, nil)
	var rm broker.ChannelRemover = a
	if n, err := a.Purge(ctx, dlq, ""); err != nil || n != 1 {
		t.Fatalf("Purge of the dead-letter queue: %d, %v", n, err)
	}
	if err := rm.RemoveChannel(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveChannel(ctx, dlq); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{queue, retry, dlq} {
		if exists(t, q, false) {
			t.Errorf("queue %s still exists", q)
		}
	}
	for _, e := range []string{ch, dlq} {
		if exists(t, e, true) {
			t.Errorf("exchange %s still exists", e)
		}
	}
	if !exists(t, other, false) {
		t.Fatal("the queue of a group the adapter never subscribed is gone")
	}
	if err := a.RemoveGroup(ctx, ch, "other"); err != nil || exists(t, other, false) {
		t.Errorf("RemoveGroup: %v", err)
	}
	if err := a.RemoveChannel(ctx, unique("remove.none")); err != nil {
		t.Errorf("RemoveChannel of a channel that does not exist: %v", err)
	}
}

// TestRemoveChannelSharedDeadLetterExchange: the dead-letter exchange
// shared by the dead-letter queues of several channels (DEAD_LETTER, as
// @moleculer/channels declares it) stays while any queue is bound to it,
// whoever bound it, and goes with the removal of the last dead-letter
// queue; the refusals (406, which close the AMQP channel) leave the
// adapter working.
func TestRemoveChannelSharedDeadLetterExchange(t *testing.T) {
	needAMQP(t)
	chA, chB := unique("dlx.a.topic"), unique("dlx.b.topic")
	dlqA, dlqB, dlx, foreign := unique("dlx.a.DLQ"), unique("dlx.b.DLQ"), unique("DEAD_LETTER"), unique("dlx.node.DLQ")
	cleanup(t, []string{"g." + chA, "g." + chB, dlqA, dlqB, foreign}, []string{chA, chB, dlqA, dlqB, dlx})
	a, err := chamqp.New(brokerenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	fail := func(context.Context, *channels.Message) error { return errors.New("fail") }
	p := startPluginOn(t, a, &service{Name: "svc", Channels: channels.Channels{
		chA: {Group: "g", Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlqA, ExchangeName: dlx}},
		chB: {Group: "g", Handler: fail, DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlqB, ExchangeName: dlx}},
	}})
	// A dead-letter queue of another process (a Node service) bound to the
	// same exchange.
	raw := rawChannel(t, rawConn(t))
	if _, err := raw.QueueDeclare(foreign, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueueBind(foreign, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	startPluginOn(t, a, nil)
	remove := func(name string) {
		t.Helper()
		if err := a.RemoveChannel(ctx, name); err != nil {
			t.Fatalf("RemoveChannel(%s): %v", name, err)
		}
	}
	// A channel removed: its dead-letter queue is still bound.
	remove(chA)
	if !exists(t, dlx, true) {
		t.Fatal("the dead-letter exchange is gone while dead-letter queues are bound to it")
	}
	// One dead-letter queue removed: the other is still bound.
	remove(dlqA)
	if exists(t, dlqA, false) {
		t.Fatal("the removed dead-letter queue still exists")
	}
	if !exists(t, dlx, true) {
		t.Fatalf("the dead-letter exchange is gone while %s is bound to it", dlqB)
	}
	// The last of the adapter's: the foreign queue is still bound.
	remove(chB)
	remove(dlqB)
	if exists(t, dlqB, false) {
		t.Fatal("the removed dead-letter queue still exists")
	}
	if !exists(t, dlx, true) {
		t.Fatalf("the dead-letter exchange is gone while %s (not the adapter's) is bound to it", foreign)
	}
	// The adapter still works after the refusals.
	if err := a.Publish(ctx, chB, &broker.Outgoing{Payload: []byte("x")}); err != nil {
		t.Fatalf("Publish after the refused deletions: %v", err)
	}
	// Once nothing is bound, removing the dead-letter queue again deletes it.
	if _, err := raw.QueueDelete(foreign, false, false, false); err != nil {
		t.Fatal(err)
	}
	remove(dlqB)
	if exists(t, dlx, true) {
		t.Fatal("the dead-letter exchange is left behind after the last dead-letter queue bound to it was removed")
	}
	remove(chB) // the exchange declared again by the publish above
	if exists(t, chB, true) {
		t.Fatalf("exchange %s still exists", chB)
	}
}
