package brokerenv

import (
	"fmt"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// AMQPTracker remembers the AMQP adapters built during a spec; at its end
// (Target.AfterSpec, once its members stopped) DeleteDeclared deletes the
// queues and exchanges they declared. Quorum queues are heavy: a suite
// leaves none behind.
type AMQPTracker struct {
	// Dial opens the connection the deletions use.
	Dial func() (*amqp091.Connection, error)
	// Logf reports a cleanup that could not connect.
	Logf func(format string, args ...any)

	mu sync.Mutex
	as []declarer
}

// declarer is what the tracker needs of an AMQP adapter (amqp.Adapter;
// named by its method, as the amqp package's own tests import this one).
type declarer interface {
	Declared() (queues, exchanges []string)
}

// Track records a, as returned by amqp.New with err; a must have the
// Declared method of amqp.Adapter.
func (t *AMQPTracker) Track(a broker.Adapter, err error) (broker.Adapter, error) {
	if err != nil {
		return nil, err
	}
	d, ok := a.(declarer)
	if !ok {
		return nil, fmt.Errorf("brokerenv: %T does not tell what it declared", a)
	}
	t.mu.Lock()
	t.as = append(t.as, d)
	t.mu.Unlock()
	return a, nil
}

// DeleteDeclared deletes what the tracked adapters declared, on a
// connection of its own; what is already gone is skipped.
func (t *AMQPTracker) DeleteDeclared() {
	t.mu.Lock()
	as := t.as
	t.as = nil
	t.mu.Unlock()
	queues, exchanges := map[string]bool{}, map[string]bool{}
	for _, a := range as {
		qs, es := a.Declared()
		for _, q := range qs {
			queues[q] = true
		}
		for _, e := range es {
			exchanges[e] = true
		}
	}
	if len(queues)+len(exchanges) == 0 {
		return
	}
	c, err := t.Dial()
	if err != nil {
		t.Logf("amqp cleanup: %v\n", err)
		return
	}
	defer c.Close()
	// A failed deletion closes its channel: one channel per deletion.
	del := func(f func(ch *amqp091.Channel) error) {
		ch, err := c.Channel()
		if err != nil {
			return
		}
		if err := f(ch); err == nil {
			_ = ch.Close()
		}
	}
	for q := range queues {
		del(func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err })
	}
	for e := range exchanges {
		del(func(ch *amqp091.Channel) error { return ch.ExchangeDelete(e, false, false) })
	}
}
