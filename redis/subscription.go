package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// subscription consumes one channel for one group on the kit's delivery
// skeleton (kit.Consumer). What only Redis does lives in files of its
// own: the blocking read (reader.go), ownership of held messages, the
// heartbeat and the claims (claim.go), batched acks (acks.go) and the
// per-message failure records (records.go).
type subscription struct {
	*kit.Consumer
	a    *Adapter
	c    goredis.UniversalClient
	ser  broker.Serializer
	ch   *broker.Channel
	opts ChannelOptions
	log  *slog.Logger

	startOnce sync.Once
	rd        *reader
	held      *holdings
	acks      *acker
	recs      records
}

func newSubscription(a *Adapter, c goredis.UniversalClient, ser broker.Serializer, ch *broker.Channel, opts ChannelOptions) *subscription {
	s := &subscription{Consumer: kit.NewConsumer(ch), a: a, c: c, ser: ser, ch: ch, opts: opts, log: ch.Logger}
	s.held = newHoldings()
	s.recs = records{c: c, stream: ch.Name, group: ch.Group, ttl: opts.ErrorInfoTTL}
	s.acks = newAcker(opts.AckBatch, s.xack)
	return s
}

// Start begins reading and maintaining; it runs once, and not after a
// drain.
func (s *subscription) Start() {
	s.startOnce.Do(func() {
		s.rd = s.a.newReader(s)
		if s.rd.owned {
			s.acks.carryWithReads()
		}
		if !s.Consumer.Start(s.fetchLoop, s.maintainLoop) {
			s.rd.close() // drained first
			return
		}
		s.acks.Start()
		s.Beat(s.opts.HeartbeatInterval, s.heartbeat)
	})
}

// Drain stops reading at once, waits for running handlers (bounded by ctx),
// flushes the acks, hands back what was held without running and removes
// the consumer when it holds nothing.
func (s *subscription) Drain(ctx context.Context) error {
	return s.Consumer.Drain(ctx, kit.DrainHooks{
		StopFetching: func(ctx context.Context) {
			if s.rd != nil {
				s.rd.stop(ctx)
			}
		},
		Finish: s.finish,
	})
}

func (s *subscription) finish(ctx context.Context, timedOut bool) error {
	defer s.a.subs.Remove(s)
	if s.rd != nil {
		s.rd.close()
	}
	if !s.Started() {
		return nil
	}
	var errs []error
	if err := s.acks.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	s.handBackWaiting(ctx)
	if !timedOut {
		s.cleanupConsumer(ctx)
	}
	return errors.Join(errs...)
}

// delivery is one entry handed to the kit: the kit's delivery, its message
// and the settler in one allocation.
type delivery struct {
	kit.Delivery
	msg        broker.Message
	s          *subscription
	id         string
	deliveries int
	recorded   bool // a failure record may exist: delete it with the ack
}

// delivery builds the kit's delivery for one entry. attempt is 1 + the
// failed runs recorded, deliveries the broker's delivery counter.
func (s *subscription) delivery(m goredis.XMessage, attempt, deliveries int, rec record) *kit.Delivery {
	d := &delivery{s: s, id: m.ID, deliveries: deliveries, recorded: rec.exists}
	field, err := s.decode(&d.msg, m, attempt)
	d.Delivery = kit.Delivery{Msg: &d.msg, Deliveries: deliveries, Final: rec.final, Failure: rec.failure,
		DecodeField: field, DecodeErr: err, Settle: d}
	return &d.Delivery
}

func (s *subscription) decode(msg *broker.Message, m goredis.XMessage, attempt int) (string, error) {
	msg.SetSerializer(s.ser)
	msg.Channel, msg.Group, msg.ID, msg.Attempt, msg.Raw = s.ch.Name, s.ch.Group, m.ID, attempt, m
	if ms, err := strconv.ParseInt(strings.SplitN(m.ID, "-", 2)[0], 10, 64); err == nil {
		msg.Timestamp = time.UnixMilli(ms)
	}
	p, ok := m.Values[FieldPayload].(string)
	if !ok {
		return "payload", fmt.Errorf("stream entry has no %q field", FieldPayload)
	}
	msg.Payload = []byte(p)
	if hv, ok := m.Values[FieldHeaders]; ok {
		hs, _ := hv.(string)
		h, err := broker.DecodeHeadersString(s.ser, hs)
		if err != nil {
			return "headers", err
		}
		msg.Headers = h
	}
	return "", nil
}

// Ack acknowledges the entry. It stays held (heartbeated, skipped by the
// claims) until its XACK succeeded, so that neither another member nor a
// claim of this one runs it again while the XACK waits or is retried (a
// broker restart).
func (t *delivery) Ack(context.Context) error {
	if err := t.s.acks.Add(ackItem{t.id, t.recorded}); err != nil {
		t.s.held.remove(t.id)
		return err
	}
	return nil
}

func (t *delivery) Retry(ctx context.Context, delay time.Duration, failure map[string]string) error {
	// Record the failed run before handing the message back, so that the
	// member that claims it sees the attempt.
	err := t.s.recs.addFailure(ctx, t.id, failure)
	t.s.scheduleRetry(ctx, t.id, delay)
	return err
}

func (t *delivery) DeadLetter(ctx context.Context, payload []byte, headers map[string]string) error {
	values, err := encodeFields(t.s.ser, payload, headers)
	if err != nil {
		return err
	}
	args := &goredis.XAddArgs{Stream: t.s.ch.DeadLetter.Queue, Values: values}
	// A dead-letter copy waits for the adapter's replicas (WithWaitReplicas)
	// before the original is acknowledged; one that reaches too few counts
	// as a failed dead-letter publish: the original stays pending and is
	// dead-lettered again (the copy may then be there twice).
	if w := t.s.a.waitFor(SendOptions{}, false); w.n > 0 {
		return xaddWaited(ctx, t.s.c, args.Stream, []*goredis.XAddArgs{args}, w)[0]
	}
	return t.s.c.XAdd(ctx, args).Err()
}

func (t *delivery) Keep(ctx context.Context, failure map[string]string) error {
	// Stays pending: no longer heartbeated, it is claimed again after
	// MinIdleTime and dead-lettered from the kept failure without running.
	err := t.s.recs.keepFinal(ctx, t.id, failure)
	t.s.held.remove(t.id)
	return err
}

func (t *delivery) Release(ctx context.Context) error {
	return t.s.release(ctx, []string{t.id}, t.deliveries-1)
}
