package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// delivery is one pulled message handed to the kit: the kit's delivery,
// its message and the settler in one allocation.
type delivery struct {
	kit.Delivery
	msg    broker.Message
	s      *subscription
	m      js.Msg
	seq    uint64
	recs   records // of the consumer that delivered it
	rec    record
	hasRec bool // a record may exist: delete it with the ack
	known  bool // rec is what the bucket holds (read, or none can exist)
	// needsRecord: delivered before, its record is to be read.
	needsRecord bool
}

// recordReadTimeout bounds the read of a failure record in the fetch path:
// the messages behind it wait for it.
func (s *subscription) recordReadTimeout() time.Duration {
	return min(max(s.opts.InProgressInterval, 100*time.Millisecond), DefaultOpTimeout)
}

// holdBatch hands messages received together to the kit, in order. Each
// is reported in progress from its arrival; the failure records of the
// redelivered ones are read concurrently (each bounded by
// recordReadTimeout), so a slow read does not hold the others back. The
// records a message is keyed by are decided here: when a consumer
// sequence went back (the consumer was created again) and no read of the
// consumer followed yet, the consumer is read first, so that this message
// and every later one is keyed by the consumer that delivered it.
func (s *subscription) holdBatch(ds []*delivery) {
	if s.recreatedGen.Load() > s.appliedGen.Load() {
		s.readConsumer()
	}
	_, recs, _ := s.consumer()
	for _, d := range ds {
		d.recs = recs
	}
	var wg sync.WaitGroup
	for _, d := range ds {
		if d.needsRecord {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.readRecord(d)
			}()
		}
	}
	wg.Wait()
	for _, d := range ds {
		s.Hold(&d.Delivery)
	}
}

// delivery builds the kit's delivery, reported in progress at once: the
// attempt is 1 + the failed runs recorded, the deliveries the server's
// NumDelivered less the releases (readRecord completes both for a message
// delivered before).
func (s *subscription) delivery(m js.Msg) *delivery {
	_, recs, _ := s.consumer()
	d := &delivery{s: s, m: m, recs: recs, known: true}
	s.track(d)
	msg := &d.msg
	msg.SetSerializer(s.ch.Serializer)
	msg.Channel, msg.Group, msg.Payload, msg.Raw, msg.Attempt = s.ch.Name, s.ch.Group, m.Data(), m, 1
	if meta, err := m.Metadata(); err == nil {
		d.seq = meta.Sequence.Stream
		msg.ID = strconv.FormatUint(d.seq, 10)
		msg.Timestamp = meta.Timestamp
		d.Deliveries = int(meta.NumDelivered)
		d.needsRecord = meta.NumDelivered > 1
		// Arrivals come one at a time (the inbox's callback).
		if last := s.lastCseq.Swap(meta.Sequence.Consumer); meta.Sequence.Consumer <= last {
			s.recreatedGen.Add(1)
		}
	}
	if h := m.Headers(); len(h) > 0 {
		msg.Headers = make(map[string]string, len(h))
		for k, vs := range h {
			if len(vs) == 0 || strings.HasPrefix(k, headerPrefixNATS) {
				continue
			}
			msg.Headers[k] = vs[0]
		}
	}
	d.Delivery.Msg, d.Delivery.Settle = msg, d
	return d
}

// readRecord reads the failure record of a message delivered before.
func (s *subscription) readRecord(d *delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), s.recordReadTimeout())
	rec, ok, err := d.recs.load(ctx, d.seq)
	cancel()
	d.hasRec = ok || err != nil // unread: the ack clears it anyway
	switch {
	case err != nil:
		d.known = false
		s.log.Warn("channels/jetstream: reading the failure record failed; counting from the delivery counter",
			"channel", s.ch.Name, "id", d.msg.ID, "error", err)
	case ok:
		d.rec = rec
		d.msg.Attempt = 1 + rec.Failures
		d.Deliveries = max(d.Deliveries-rec.Releases, 1)
		d.Final, d.Failure = rec.Final, rec.Failure
	}
}

func (t *delivery) Ack(ctx context.Context) error {
	t.s.untrack(t)
	var err error
	if t.s.opts.AckSync {
		actx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
		err = t.m.DoubleAck(actx)
		cancel()
	} else {
		err = t.m.Ack()
	}
	if err == nil && t.hasRec {
		rctx, cancel := context.WithTimeout(ctx, DefaultOpTimeout)
		if rerr := t.recs.remove(rctx, t.seq); rerr != nil {
			t.s.log.Warn("channels/jetstream: deleting a failure record failed; it expires with the bucket TTL",
				"channel", t.s.ch.Name, "id", t.msg.ID, "error", rerr)
		}
		cancel()
	}
	return err
}

func (t *delivery) Retry(ctx context.Context, delay time.Duration, failure map[string]string) error {
	// Record the failed run before the nak, so that whichever member gets
	// the message next sees the attempt.
	return t.update(ctx, func(rec *record) { rec.Failures++; rec.Failure = failure }, func() error { return t.m.NakWithDelay(delay) })
}

// update writes the message's record changed by change, then hands the
// message back with nak. The message is reported in progress until the
// nak (a write can take DefaultOpTimeout: the server would deliver it
// again meanwhile). A record that could not be read at the delivery
// is read again first; when it still cannot be, nothing is written (a
// record started from zero would overwrite the count kept there) and the
// message is handed back all the same.
func (t *delivery) update(ctx context.Context, change func(*record), nak func() error) error {
	if !t.known {
		rec, ok, err := t.recs.load(ctx, t.seq)
		if err != nil {
			t.s.untrack(t)
			return errors.Join(fmt.Errorf("channels/jetstream: failure record unreadable, not updated: %w", err), nak())
		}
		t.known = true
		if ok {
			t.rec = rec
		}
	}
	rec := t.rec
	change(&rec)
	err := t.recs.store(ctx, t.seq, rec)
	if err == nil {
		t.rec, t.hasRec = rec, true
	}
	t.s.untrack(t)
	return errors.Join(err, nak())
}

func (t *delivery) DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error {
	m := nats.NewMsg(t.s.ch.DeadLetter.Queue)
	m.Data = payload
	if err := setHeaders(m.Header, headers, len(payload) == 0); err != nil {
		return err
	}
	// One id per message of one consumer: a dead letter published again
	// after a lost acknowledgement is stored once (within the dead-letter
	// stream's Duplicates window).
	m.Header.Set(nats.MsgIdHdr, "channels-dl."+t.recs.key(t.seq))
	_, err := t.s.c.js.PublishMsg(ctx, m)
	if errors.Is(err, js.ErrNoStreamResponse) && t.s.c.nc.IsConnected() {
		if _, serr := ensureStream(ctx, t.s.c.js, t.s.ch.DeadLetter.Queue, deadLetterStream(t.s.opts.DeadLetterStream)); serr == nil {
			_, err = t.s.c.js.PublishMsg(ctx, m)
		}
	}
	return err
}

func (t *delivery) Keep(ctx context.Context, failure map[string]string) error {
	return t.update(ctx, func(rec *record) { rec.Final, rec.Failure = true, failure },
		func() error { return t.m.NakWithDelay(DefaultKeepDelay) })
}

func (t *delivery) Release(ctx context.Context) error {
	return t.update(ctx, func(rec *record) { rec.Releases++ }, t.m.Nak)
}
