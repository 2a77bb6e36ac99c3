package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// delivery is one message handed to the kit, with its settler.
type delivery struct {
	kit.Delivery
	msg  broker.Message
	p    *partition
	km   kafkago.Message
	hdrs map[string]string // the headers as read, the internal ones included
	// again is set by a settlement that runs the message again in this
	// process (an ordered channel's retry, a failed dead-letter publish):
	// its lane stays taken and its offset unsettled.
	again bool
	// ours: the message is a retry copy written for this group (it carries
	// x-group with this group's name): its x-retry-not-before and
	// x-redelivered-count are read, clamped.
	ours bool
	// counted: its run was counted in the commit metadata (careful mode).
	counted bool
	// held: it is counted in the partition's held messages and the
	// subscription's held bytes (partition.addHeld).
	held bool
}

// delivery builds the kit's delivery, or nil for a message that is not for
// this group (a retry copy of another group). prev, when not nil, is the
// delivery run again.
func (p *partition) delivery(m kafkago.Message, prev *delivery) *delivery {
	s := p.s
	d := &delivery{p: p, km: m}
	msg := &d.msg
	msg.SetSerializer(s.ch.Serializer)
	msg.Channel, msg.Group, msg.Payload, msg.Raw, msg.Timestamp = s.ch.Name, s.ch.Group, m.Value, m, m.Time
	msg.ID = strconv.Itoa(m.Partition) + ":" + strconv.FormatInt(m.Offset, 10)
	msg.Attempt = 1
	d.Delivery = kit.Delivery{Msg: msg, Settle: d}
	hdrs, err := fromKafkaHeaders(m.Headers)
	if err != nil {
		d.DecodeField, d.DecodeErr = "headers", err
		return d
	}
	if g, ok := hdrs[broker.HeaderGroup]; ok {
		if g != s.ch.Group {
			return nil
		}
		// A copy for this group is never past its last attempt: a count
		// beyond MaxRetries (forged, or from a policy since lowered) makes
		// it the last attempt, which runs.
		d.ours = true
		msg.Attempt = 1 + min(failedRuns(hdrs), s.ch.Retry.MaxRetries)
	}
	d.hdrs = hdrs
	if _, internal := hdrs[HeaderNotBefore]; internal {
		msg.Headers = maps.Clone(hdrs)
		delete(msg.Headers, HeaderNotBefore)
	} else {
		msg.Headers = hdrs
	}
	if prev != nil {
		msg.Attempt = prev.msg.Attempt
		d.ours = prev.ours
	}
	return d
}

// notBeforeSlack is how far the not-before time of a copy of ours may lie
// past its record's timestamp plus the channel's longest backoff (clock
// steps between the member that wrote it and the broker).
const notBeforeSlack = time.Second

// wait is how long d must wait before it runs: the rest of the backoff of a
// retry copy of this group, at most the channel's longest backoff. The
// header of any other message is ignored, and so is a not-before time that
// no retry of this channel could have written (further past the record's
// timestamp than the longest backoff): a producer cannot hold messages back
// with it.
func (p *partition) wait(d *delivery) time.Duration {
	if !d.ours {
		return 0
	}
	at, ok := notBefore(d.hdrs)
	if !ok {
		return 0
	}
	longest := p.s.maxBackoff
	if ts := d.km.Time; !ts.IsZero() && at.Sub(ts) > longest+notBeforeSlack {
		if p.s.forged.Add(1) == 1 || p.s.forged.Load()%1000 == 0 {
			p.s.log.Warn("channels/kafka: a retry copy's not-before time lies beyond the channel's longest backoff; it runs at once",
				"channel", p.s.ch.Name, "group", p.s.ch.Group, "id", d.msg.ID, "not_before", at.UTC().Format(time.RFC3339),
				"longest_backoff", longest, "seen", p.s.forged.Load())
		}
		return 0
	}
	return min(max(time.Until(at), 0), longest)
}

// size is what the message holds in memory, as the read-ahead budget
// counts it.
func (d *delivery) size() int64 {
	n := len(d.km.Key) + len(d.km.Value) + 64
	for _, h := range d.km.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// noLane is the lane of a message that is not ordered.
const noLane = "\x00unordered"

// lane is the ordering lane of a message: the key (PerKey: a message
// without a key has none) or the whole partition (PerPartition); noLane
// on an unordered channel.
func (d *delivery) lane() string {
	switch d.p.s.opts.Ordering {
	case PerKey:
		if d.km.Key == nil {
			return noLane
		}
		return "k" + string(d.km.Key)
	case PerPartition:
		return ""
	}
	return noLane
}

// finished runs after the delivery was settled: the slot is given back by
// the kit; the next message of its lane, if any, is started. A counted run
// handed back (Release) is uncounted: its run count goes back by one.
func (d *delivery) finished(out broker.Outcome) {
	p := d.p
	p.mu.Lock()
	if p.running > 0 {
		p.running--
	}
	var next *delivery
	if lane := d.lane(); lane != noLane && !d.again {
		q := p.lanes[lane]
		if len(q) > 0 && q[0].km.Offset == d.km.Offset {
			q = q[1:]
		}
		if len(q) == 0 {
			delete(p.lanes, lane)
		} else {
			p.lanes[lane], next = q, q[0]
		}
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	if d.counted {
		if out.Action == broker.Release {
			p.uncountRun(d)
		} else {
			p.ranCarefully(d)
		}
	}
	if next != nil {
		p.launchQueued(next)
	}
}

func (d *delivery) Ack(context.Context) error {
	d.p.settled(d.km.Offset)
	return nil
}

// Retry hands the failed message to the group again. On an unordered
// channel it publishes a copy to the channel's topic (same key, so the same
// partition when keyed) with x-group, x-redelivered-count = failed runs and
// the not-before time of the backoff, as @moleculer/channels does; the
// original is settled once the copy is acknowledged. Members of other
// groups skip the copy. On an ordered channel, or when the copy cannot be
// published, the message runs again in this process after the delay and
// holds its lane meanwhile. A copy whose write's outcome is unknown
// (ErrWriteUnknown) may be in the topic: the message runs again here as
// well (at-least-once: losing it is the only other choice).
func (d *delivery) Retry(ctx context.Context, delay time.Duration, failure map[string]string) error {
	p := d.p
	if d.lane() == noLane {
		h := make(map[string]string, len(d.hdrs)+len(failure)+3)
		for k, v := range d.hdrs {
			if !strings.HasPrefix(k, broker.HeaderErrorPrefix) {
				h[k] = v
			}
		}
		maps.Copy(h, failure)
		h[broker.HeaderGroup] = p.s.ch.Group
		h[broker.HeaderRedeliveredCount] = strconv.Itoa(d.msg.Attempt)
		delete(h, HeaderNotBefore) // the message's own, if any, is not carried over
		if delay > 0 {
			h[HeaderNotBefore] = strconv.FormatInt(time.Now().Add(delay).UnixMilli(), 10)
		}
		// Every in-sync replica must have the copy before the original is
		// settled, whatever the adapter's default acks for sends.
		errs, cl := p.s.a.produceCall(ctx, p.s.c, p.s.ch.Name, []SendOptions{{Key: d.km.Key, Acks: AcksAll}},
			[]kafkago.Message{{Key: d.km.Key, Value: d.km.Value, Headers: toKafkaHeaders(h)}})
		err := errs[0]
		if errors.Is(err, errInFlight) {
			// The copy may still be written: the original stays unsettled
			// until its write ends, then is settled (the copy runs) or run
			// again here (no copy), never both.
			// A hand-over waits for the write (partition.busy).
			d.again = true
			p.mu.Lock()
			p.writing++
			p.mu.Unlock()
			go func() {
				<-cl.done
				d.retryWritten(cl.errs[0], delay, failure)
				p.mu.Lock()
				p.writing--
				p.cond.Broadcast()
				p.mu.Unlock()
			}()
			return nil
		}
		if err == nil {
			p.settled(d.km.Offset)
			return nil
		}
		p.s.log.Warn("channels/kafka: publishing a retry failed; the message runs again in this process",
			"channel", p.s.ch.Name, "group", p.s.ch.Group, "id", d.msg.ID, "error", broker.Redact(err.Error()))
	}
	d.again = true
	d.runAgain(delay, failure)
	return nil
}

// retryWritten ends a retry whose copy was in flight at the settle's
// deadline, once its write ended with err.
func (d *delivery) retryWritten(err error, delay time.Duration, failure map[string]string) {
	p := d.p
	if err == nil {
		p.settled(d.km.Offset)
		return
	}
	p.s.log.Warn("channels/kafka: publishing a retry failed; the message runs again in this process",
		"channel", p.s.ch.Name, "group", p.s.ch.Group, "id", d.msg.ID, "error", broker.Redact(err.Error()))
	d.runAgain(delay, failure)
}

// runAgain runs the message again in this process after delay, as its
// next attempt.
func (d *delivery) runAgain(delay time.Duration, failure map[string]string) {
	next := d.p.delivery(d.km, d)
	next.msg.Attempt = d.msg.Attempt + 1
	next.Failure = failure
	d.p.hold(next, delay, false)
}

// DeadLetter publishes the copy to the dead-letter topic with the kit's
// headers and x-original-partition, and returns once every in-sync replica
// acknowledged it (AcksAll, whatever the adapter's default for sends).
func (d *delivery) DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error {
	h := maps.Clone(headers)
	delete(h, HeaderNotBefore)
	h[broker.HeaderOriginalPartition] = strconv.Itoa(d.km.Partition)
	p := d.p
	// The settlement ends with a drain's deadline: a stop does not leave it
	// waiting for a slow write.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.s.drainExpired:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := p.s.a.ensureTopic(ctx, p.s.c, p.s.ch.DeadLetter.Queue, p.s.deadLetterTopic()); err != nil {
		return err
	}
	errs, cl := p.s.a.produceCall(ctx, p.s.c, p.s.ch.DeadLetter.Queue, []SendOptions{{Key: d.km.Key, Acks: AcksAll}},
		[]kafkago.Message{{Key: d.km.Key, Value: payload, Headers: toKafkaHeaders(h)}})
	if errors.Is(errs[0], errInFlight) {
		// The copy may still be written: wait for the end of its write
		// (bounded by the producer's own timeouts) rather than keep the
		// message and write a second copy, past the settle deadline (ctx)
		// but not past the deadline of a drain: then the outcome is
		// unknown, the message stays unsettled and may be dead-lettered
		// again by its next run (at-least-once).
		select {
		case <-cl.done:
			return cl.errs[0]
		case <-p.s.drainExpired:
			return fmt.Errorf("channels/kafka: the drain's deadline passed while the dead-letter copy was written: %w", ErrWriteUnknown)
		}
	}
	return errs[0]
}

// Keep runs the message again after DefaultKeepDelay as a final failure
// (dead-lettered without running); its offset stays uncommitted meanwhile.
// If the process stops first, the next owner runs it again.
func (d *delivery) Keep(_ context.Context, failure map[string]string) error {
	d.again = true
	next := d.p.delivery(d.km, d)
	next.Final, next.Failure = true, failure
	d.p.hold(next, DefaultKeepDelay, false)
	return nil
}

// Release leaves the message unsettled: the partition's next reader (this
// member after a restart, or the next owner) reads it again with the same
// attempt.
func (d *delivery) Release(context.Context) error {
	d.again = true
	return nil
}
