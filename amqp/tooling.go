package amqp

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

var (
	_ broker.DeadLetterStore = (*Adapter)(nil)
	_ broker.Tailer          = (*Adapter)(nil)
	_ broker.ChannelLister   = (*Adapter)(nil)
)

// TailPrefetch is how many messages a Tail holds unacknowledged at most:
// RabbitMQ keeps the rest in the tail's queue while fn is slow.
const TailPrefetch = 64

// errQuorumBrowse is why a quorum dead-letter queue is not browsed.
var errQuorumBrowse = fmt.Errorf("%w: the dead-letter queue is a quorum queue: a basic.get counts a delivery of each message it takes "+
	"and RabbitMQ drops or dead-letters a message at its delivery limit (x-delivery-limit, a policy, or 20 by default from RabbitMQ 4.0), "+
	"so browsing it would burn its dead letters; declare the dead-letter queue as a classic queue (the default) to browse it",
	broker.ErrUnsupported)

// errUnknownType is why a dead-letter queue whose type could not be told
// is not browsed: it may be a quorum queue.
var errUnknownType = fmt.Errorf("%w: the type of the dead-letter queue could not be told (RabbitMQ's refusals of a declaration did not name it): "+
	"browsing a quorum queue would burn its dead letters", broker.ErrUnsupported)

// errGivenConn is why an adapter built with NewFromClient does not read
// queues for the tooling.
var errGivenConn = fmt.Errorf("%w: the adapter was given its connection (NewFromClient): a message whose header table the client library refuses "+
	"would close that connection, which the adapter cannot dial again; browsing, removing dead letters and tailing need an adapter built with New",
	broker.ErrUnsupported)

// toolConn returns a connection of its own for one tooling call and the
// function that closes it: a message whose headers the client library
// cannot read closes the connection that reads it, which is then not the
// one of the sends or of the consumers. An adapter built with NewFromClient
// has no address to dial: errGivenConn.
func (a *Adapter) toolConn(ctx context.Context) (*amqp091.Connection, func(), error) {
	if _, err := a.liveOrErr(); err != nil {
		return nil, nil, err
	}
	if a.external != nil {
		return nil, nil, errGivenConn
	}
	a.mu.Lock()
	log := a.env.Logger
	a.mu.Unlock()
	c, err := newSession(a, log, "channels-tool").dialAll(ctx)
	if err != nil {
		return nil, nil, err
	}
	return c, func() { go func() { _ = c.CloseDeadline(time.Now().Add(DefaultOpTimeout)) }() }, nil
}

// BrowseDeadLetters calls fn with the dead letters held in the dead-letter
// queue, oldest first, up to the number of messages the queue held when
// the call started.
//
// AMQP 0-9-1 cannot read a queue without taking its messages: the browse
// takes them with basic.get (unacknowledged) on a connection of its own,
// and closing its channel at the end gives every one of them back to
// RabbitMQ, which puts a classic queue's messages back in their places
// (order and count unchanged, no delivery counted). While a browse holds
// them, the messages are not ready for other readers of the queue itself
// (another browse counts and sees fewer); the groups that consume the
// dead-letter queue as a channel read queues of their own and see nothing
// of it. A quorum queue counts a delivery for every message taken and
// drops or dead-letters it at its delivery limit, so a quorum dead-letter
// queue is refused (an error wrapping broker.ErrUnsupported) before any
// message is taken; its type is found by declaring it again as a quorum
// queue (durable, with x-queue-type quorum): a classic queue refuses that
// and the refusal names its type or a property no quorum queue has, and a
// quorum queue takes it even where RabbitMQ ignores x-queue-type on a
// redeclaration (quorum_queue.property_equivalence.relaxed_checks_on_redeclaration,
// 3.11.16+). A queue whose type cannot be told is refused as well
// (broker.ErrUnsupported). Should the queue be deleted between the count
// and the probe, the probe declares an empty quorum queue of that name.
//
// StoredMessage.ID is the message id property, else the x-original-id
// header, followed by "~" and 8 hex digits of a digest of the payload,
// headers and properties ("<message id>~1a2b3c4d"), else "sha256:" and 24
// hex digits of that digest: it stays the same across browses. Dead
// letters written by this adapter keep the message id of the message they
// copy; the digest tells apart the dead letters of one message written by
// different groups (their x-original-group and x-error-* headers differ),
// and RemoveDeadLetters removes only messages whose ID, recomputed from
// what it takes, is among those asked for. Two copies with the same
// content (one message dead-lettered twice by one group, at-least-once)
// have one ID. Time is zero (RabbitMQ does not tell when it stored a
// message; the x-error-timestamp header tells when it was dead-lettered).
// Headers are read as the consumers read them; a message whose header
// table the client library refuses (nested deeper than 32, wider than
// 8,192 entries) closes the browse's connection: the browse ends with an
// error naming its position and every message stays in the queue.
// Taking a message shows: RabbitMQ marks every message a browse gave
// back as redelivered (a group reading the dead-letter queue as a channel
// gets it with the redelivered flag; a classic queue counts no delivery);
// a message whose TTL (x-message-ttl, expiration) ran out while a browse
// held it is dropped, or dead-lettered, when it goes back; and RabbitMQ's
// consumer_timeout (30 minutes by default) applies to the messages a
// browse holds: a browse longer than that (a slow fn) has its channel
// closed by RabbitMQ and ends with an error, every message given back.
// An adapter built with NewFromClient has no connection of its own to risk:
// BrowseDeadLetters, RemoveDeadLetters and Tail return an error wrapping
// broker.ErrUnsupported there.
func (a *Adapter) BrowseDeadLetters(ctx context.Context, queue string, fn func(*broker.StoredMessage) bool) error {
	_, err := a.walkQueue(ctx, queue, func(d *amqp091.Delivery) (ack, more bool) {
		return false, fn(storedMessage(queue, d))
	})
	return err
}

// RemoveDeadLetters takes the messages of the dead-letter queue as
// BrowseDeadLetters does, up to the number held when the call started,
// acknowledges (deletes) those whose ID is among ids and gives the others
// back in their places. An ID names every message that has it: copies with
// the same content (see BrowseDeadLetters). The count is of removals
// RabbitMQ confirmed: when it acknowledged any message, it closes its
// channel and waits for RabbitMQ's close-ok, which comes after every
// acknowledgement before it was processed; when that does not come (the
// connection was lost, ctx ended), it returns 0 and an error saying the
// messages may or may not have been removed. A quorum dead-letter queue is refused.
func (a *Adapter) RemoveDeadLetters(ctx context.Context, queue string, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	return a.walkQueue(ctx, queue, func(d *amqp091.Delivery) (ack, more bool) {
		return want[storedID(d)], true
	})
}

// afterToolAck, when set (by tests), runs after each acknowledgement of
// walkQueue.
var afterToolAck func()

// walkQueue takes the messages of queue one by one (basic.get, up to the
// count of a passive declaration at the start), calls visit with each,
// acknowledges those visit acks, and gives the others back by closing the
// channel. It returns the number of acknowledgements RabbitMQ confirmed:
// when it sent any, it closes the channel and waits for close-ok (RabbitMQ
// answers a channel.close once it processed what came before it); if that
// fails, it returns 0 and the error.
func (a *Adapter) walkQueue(ctx context.Context, queue string, visit func(*amqp091.Delivery) (ack, more bool)) (int, error) {
	ctx, cancel := opCtxIfNone(ctx)
	defer cancel()
	c, release, err := a.toolConn(ctx)
	if err != nil {
		return 0, fmt.Errorf("channels/amqp: queue %q: %w", queue, err)
	}
	defer release()
	ch, err := openChannel(ctx, c, false)
	if err != nil {
		return 0, fmt.Errorf("channels/amqp: queue %q: %w", queue, err)
	}
	acked := 0
	err = a.walkOn(ctx, c, ch, queue, visit, &acked)
	if acked == 0 {
		go func() { _ = ch.Close() }()
		return 0, err
	}
	// Only close-ok proves RabbitMQ processed the acknowledgements.
	if ch.IsClosed() {
		return 0, fmt.Errorf("channels/amqp: queue %q: the channel closed after %d messages were acknowledged: they may or may not be removed: %w", queue, acked, errors.Join(err, amqp091.ErrClosed))
	}
	if cerr := bounded(ctx, "closing an AMQP channel", ch.Close); cerr != nil {
		return 0, fmt.Errorf("channels/amqp: queue %q: %d messages acknowledged, not confirmed (they may or may not be removed): %w", queue, acked, errors.Join(err, cerr))
	}
	return acked, err
}

// walkOn is walkQueue on its channel ch; acked counts the acknowledgements
// sent.
func (a *Adapter) walkOn(ctx context.Context, c *amqp091.Connection, ch *amqp091.Channel, queue string, visit func(*amqp091.Delivery) (ack, more bool), acked *int) error {
	var q amqp091.Queue
	err := bounded(ctx, "declaring a queue", func() error {
		var err error
		q, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		return err
	})
	if isCode(err, amqp091.NotFound) {
		return nil // a queue that does not exist holds nothing
	}
	if err != nil {
		return fmt.Errorf("channels/amqp: queue %q: %w", queue, err)
	}
	if q.Messages == 0 {
		return nil
	}
	// Declared again as a quorum queue: a classic queue refuses it, naming
	// its type (or its durable, auto_delete or exclusive property, which
	// no quorum queue has), and a quorum queue takes it even where
	// RabbitMQ ignores x-queue-type on a redeclaration (relaxed checks,
	// 3.11.16+), which a probe as classic would take for a classic one.
	typ, _, err := probeQueue(ctx, c, queue, QueueOptions{Durable: Bool(true)}, amqp091.Table{"x-queue-type": QueueQuorum})
	if err != nil {
		return fmt.Errorf("channels/amqp: queue %q: finding its type: %w", queue, err)
	}
	switch typ {
	case QueueQuorum:
		return fmt.Errorf("channels/amqp: queue %q: %w", queue, errQuorumBrowse)
	case "":
		return fmt.Errorf("channels/amqp: queue %q: %w", queue, errUnknownType)
	}
	for i := range q.Messages {
		var d amqp091.Delivery
		var ok bool
		err := bounded(ctx, "basic.get", func() error {
			var err error
			d, ok, err = ch.Get(queue, false)
			return err
		})
		if err != nil {
			return fmt.Errorf("channels/amqp: queue %q: reading message %d of %d: %w", queue, i+1, q.Messages, err)
		}
		if !ok {
			return nil // taken meanwhile by another reader of the queue
		}
		ack, more := visit(&d)
		if ack {
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("channels/amqp: queue %q: acknowledging message %d: %w", queue, i+1, err)
			}
			*acked++
			if afterToolAck != nil {
				afterToolAck()
			}
		}
		if !more {
			return nil
		}
	}
	return nil
}

// opCtxIfNone bounds ctx by DefaultOpTimeout when it has no deadline.
func opCtxIfNone(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultOpTimeout)
}

// storedMessage describes a delivery as the broker holds it.
func storedMessage(channel string, d *amqp091.Delivery) *broker.StoredMessage {
	return &broker.StoredMessage{ID: storedID(d), Channel: channel, Payload: d.Body, Headers: fromTable(d.Headers)}
}

// storedID identifies a stored message: its message id, else its
// x-original-id header, followed by "~" and 8 hex digits of a digest of its
// content, else "sha256:" and 24 hex digits of that digest. Two dead
// letters of one message (two groups failed it) differ in their headers
// and so in their IDs; a removal recomputes the ID of each message it
// takes, so it deletes only messages of that content.
func storedID(d *amqp091.Delivery) string {
	sum := contentDigest(d)
	if d.MessageId != "" {
		return d.MessageId + "~" + hex.EncodeToString(sum[:4])
	}
	if s, ok := valueString(d.Headers[broker.HeaderOriginalID]); ok && s != "" && len(s) <= 255 {
		return s + "~" + hex.EncodeToString(sum[:4])
	}
	return "sha256:" + hex.EncodeToString(sum[:12])
}

// contentDigest is a SHA-256 digest of the payload, headers and properties
// of d.
func contentDigest(d *amqp091.Delivery) []byte {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field(string(d.Body))
	hdrs := fromTable(d.Headers)
	keys := make([]string, 0, len(hdrs))
	for k := range hdrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field(k)
		field(hdrs[k])
	}
	for _, p := range []string{d.ContentType, d.ContentEncoding, d.CorrelationId, d.Type, d.AppId, d.ReplyTo} {
		field(p)
	}
	field(d.Timestamp.UTC().Format(time.RFC3339Nano))
	return h.Sum(nil)
}

// Tail calls fn with each message sent to channel after Tail started (once
// its queue is bound), until ctx ends or fn returns false. It declares an
// exclusive, auto-deleted queue named by RabbitMQ, bound to the channel's
// exchange with the adapter-wide BindingKey ("#" for a topic exchange
// without one), on a connection of its own, and consumes it with at most
// TailPrefetch messages unacknowledged; the queue is deleted when Tail
// returns. It joins no group: the groups' queues get every message as
// before. The channel's exchange is declared as a send declares it when
// it does not exist yet.
func (a *Adapter) Tail(ctx context.Context, channel string, fn func(*broker.StoredMessage) bool) error {
	l, err := a.liveOrErr()
	if err != nil {
		return err
	}
	if a.external != nil {
		return fmt.Errorf("channels/amqp: tail %q: %w", channel, errGivenConn)
	}
	o := a.chanOpts.withDefaults()
	setup, cancel := opCtxIfNone(ctx)
	defer cancel()
	if err := l.topo.assertExchange(setup, channel, o.Exchange); err != nil {
		return fmt.Errorf("channels/amqp: tail %q: %w", channel, err)
	}
	c, release, err := a.toolConn(setup)
	if err != nil {
		return fmt.Errorf("channels/amqp: tail %q: %w", channel, err)
	}
	defer release()
	ch, err := openChannel(setup, c, false)
	if err != nil {
		return fmt.Errorf("channels/amqp: tail %q: %w", channel, err)
	}
	var q amqp091.Queue
	var deliveries <-chan amqp091.Delivery
	var closed chan *amqp091.Error
	err = bounded(setup, "declaring the tail's queue", func() error {
		var err error
		if q, err = ch.QueueDeclare("", false, true, true, false, nil); err != nil {
			return err
		}
		key := o.BindingKey
		if key == "" && o.Exchange.Type == "topic" {
			key = "#"
		}
		if err = ch.QueueBind(q.Name, key, channel, false, nil); err != nil {
			return err
		}
		if err = ch.Qos(TailPrefetch, 0, false); err != nil {
			return err
		}
		closed = ch.NotifyClose(make(chan *amqp091.Error, 1))
		deliveries, err = ch.Consume(q.Name, "", false, true, false, false, nil)
		return err
	})
	if err != nil {
		go func() { _ = ch.Close() }()
		return fmt.Errorf("channels/amqp: tail %q: %w", channel, err)
	}
	defer func() {
		// The queue goes with the channel's consumer (auto-delete) and the
		// connection (exclusive); deleted here as well.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultOpTimeout)
		defer cancel()
		_ = bounded(dctx, "deleting the tail's queue", func() error {
			_, err := ch.QueueDelete(q.Name, false, false, false)
			return err
		})
		_ = closeChannel(dctx, ch)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				cause := error(amqp091.ErrClosed)
				select {
				case e := <-closed:
					if e != nil {
						cause = e
					}
				default:
				}
				return fmt.Errorf("channels/amqp: tail %q: its channel closed: %w", channel, cause)
			}
			m := storedMessage(channel, &d)
			_ = d.Ack(false)
			if !fn(m) {
				return nil
			}
		}
	}
}
