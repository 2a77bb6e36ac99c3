package amqp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// Publish sends the message to the channel's fanout exchange (declared
// first, once, unless WithPublishAssertExchange(false)) and returns once
// RabbitMQ confirmed it. Messages are persistent unless the send says
// otherwise. A send with broker.PublishOptions.Routed is mandatory and does
// not declare the exchange: a message no queue receives (returned by
// RabbitMQ) and one sent to an exchange that does not exist fail with an
// error wrapping broker.ErrPublish and broker.ErrNotFound.
func (a *Adapter) Publish(ctx context.Context, channel string, msg *broker.Outgoing) error {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return err
		}
		return broker.ErrClosed // closing
	}
	r, err := a.prepare(ctx, l, channel, msg, nil)
	if err != nil {
		return err
	}
	if err := l.pub.publish(ctx, r.exchange, r.key, r.mandatory, r.exclusive, r.msg); err != nil {
		if isCode(err, amqp091.NotFound) {
			l.topo.setExchange(r.exchange, false)
		}
		return &broker.PublishError{Channel: channel, Err: r.unrouted(err)}
	}
	if r.exclusive {
		l.topo.setExchange(r.exchange, true)
	}
	return nil
}

// pubReq is one message ready for basic.publish.
type pubReq struct {
	exchange, key string
	mandatory     bool
	// exclusive: the first send to an exchange not known to exist (with
	// WithPublishAssertExchange(false)), which may close its channel.
	exclusive bool
	// routed: broker.PublishOptions.Routed.
	routed bool
	msg    amqp091.Publishing
}

// unrouted marks err, the failure of r, as broker.ErrNotFound when r is
// routed and RabbitMQ returned the message or has no such exchange.
func (r pubReq) unrouted(err error) error {
	if !r.routed {
		return err
	}
	var ret *ReturnedError
	if errors.As(err, &ret) || isCode(err, amqp091.NotFound) {
		return fmt.Errorf("%w: %w", broker.ErrNotFound, err)
	}
	return err
}

// prepare checks the send options of msg, declares the channel's exchange
// when needed and builds the publishing. asserted, when not nil, keeps the
// outcome of each exchange declaration for the other messages of a batch.
func (a *Adapter) prepare(ctx context.Context, l *live, channel string, msg *broker.Outgoing, asserted map[string]error) (pubReq, error) {
	if err := kit.CheckOptions("amqp", msg.Options.AdapterOptions, isSendOption); err != nil {
		return pubReq{}, err
	}
	so := sendOptions(msg.Options.AdapterOptions)
	if err := so.Validate(); err != nil {
		return pubReq{}, err
	}
	routed := msg.Options.Routed
	r := pubReq{exchange: channel, key: so.RoutingKey, mandatory: so.Mandatory || routed, routed: routed}
	if so.Queue != "" {
		r.exchange, r.key = "", so.Queue
	}
	if r.exchange != "" {
		// A routed send must reach a queue that exists: its exchange is
		// not declared (a send to a missing one fails with 404).
		if !a.noAssertExchange && !routed {
			err, done := asserted[r.exchange]
			if !done {
				err = l.topo.assertExchange(ctx, r.exchange, a.chanOpts.withDefaults().Exchange)
				if asserted != nil {
					asserted[r.exchange] = err
				}
			}
			if err != nil {
				return pubReq{}, &broker.PublishError{Channel: channel, Err: err}
			}
		} else if !l.topo.knownExchange(r.exchange) {
			r.exclusive = true
		}
	}
	headers := toTable(msg.Headers)
	if headers == nil {
		// @moleculer/channels 0.1.8 reads the headers table of a message it
		// retries and fails on a message without one: never send none.
		headers = noHeaders
	}
	r.msg = amqp091.Publishing{Headers: headers, DeliveryMode: amqp091.Persistent, Priority: so.Priority,
		CorrelationId: so.CorrelationID, MessageId: so.MessageID, ContentType: so.ContentType, Type: so.Type,
		Timestamp: time.Now(), Body: msg.Payload}
	if so.DeliveryMode != 0 {
		r.msg.DeliveryMode = so.DeliveryMode
	}
	if so.Expiration > 0 {
		r.msg.Expiration = strconv.FormatInt(max(int64(so.Expiration/time.Millisecond), 1), 10)
	}
	if r.msg.MessageId == "" {
		r.msg.MessageId = a.nextID()
	}
	return r, nil
}

var _ broker.BatchPublisher = (*Adapter)(nil)

// PublishBatch publishes the messages one after the other on one confirm
// channel, without waiting, and then waits for every publisher confirm: at
// most BatchWindow messages are written and not yet confirmed at a time.
// Each message gets the outcome Publish would give it: confirmed, nacked,
// returned (mandatory), or unconfirmed when the channel closed first. The
// messages keep the batch order on the broker. A batch with a mandatory
// message (or one that is the first to an exchange not known to exist)
// takes a channel of the mandatory pool to itself for its duration, and
// returned messages are told apart by their message id. A message id given
// to several messages of one batch is refused for each of them
// (ErrInvalidOption), since ids name messages to handlers and to returns.
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return kit.FailBatch(len(msgs), err)
		}
		return kit.FailBatch(len(msgs), broker.ErrClosed) // closing
	}
	errs := make([]error, len(msgs))
	reqs := make([]pubReq, 0, len(msgs))
	at := make([]int, 0, len(msgs)) // the message of each request
	asserted := map[string]error{}
	for i, m := range msgs {
		r, err := a.prepare(ctx, l, channel, m, asserted)
		if err != nil {
			errs[i] = err
			continue
		}
		reqs, at = append(reqs, r), append(at, i)
	}
	ids := make(map[string]int, len(reqs))
	for _, r := range reqs {
		ids[r.msg.MessageId]++
	}
	if len(ids) < len(reqs) {
		kept, keptAt := reqs[:0], at[:0]
		for j, r := range reqs {
			if n := ids[r.msg.MessageId]; n > 1 {
				errs[at[j]] = fmt.Errorf("%w: amqp message id %q is given to %d messages of one batch", broker.ErrInvalidOption, r.msg.MessageId, n)
				continue
			}
			kept, keptAt = append(kept, r), append(keptAt, at[j])
		}
		reqs, at = kept, keptAt
	}
	exclusive := false
	for _, r := range reqs {
		exclusive = exclusive || r.mandatory || r.exclusive
	}
	for j, err := range l.pub.publishBatch(ctx, reqs, exclusive) {
		r := reqs[j]
		if err != nil {
			if isCode(err, amqp091.NotFound) {
				l.topo.setExchange(r.exchange, false)
			}
			errs[at[j]] = &broker.PublishError{Channel: channel, Err: r.unrouted(err)}
			continue
		}
		if r.exclusive {
			l.topo.setExchange(r.exchange, true)
		}
	}
	return broker.BatchErrors(errs)
}
