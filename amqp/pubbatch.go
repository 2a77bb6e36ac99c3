package amqp

import (
	"context"
	"errors"
	"sync"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// BatchWindow bounds the messages of one PublishBatch written to the
// channel and not yet confirmed; past it, the batch waits for the oldest
// confirm before it writes the next message.
const BatchWindow = 512

// publishBatch publishes reqs in order on one channel of the pool and
// returns the outcome of each (nil: confirmed), as publish would. exclusive
// takes a mandatory channel to itself for the whole batch: needed for
// mandatory messages, whose returns are matched by message id, and for the
// first send to an exchange not known to exist. A channel found closed when
// a message is written is replaced once per batch; after that the rest of
// the batch fails.
func (p *publisher) publishBatch(ctx context.Context, reqs []pubReq, exclusive bool) []error {
	errs := make([]error, len(reqs))
	if len(reqs) == 0 {
		return errs
	}
	var pc *pubChan
	if exclusive {
		var err error
		if pc, err = takeExcl(ctx, p.mandatory, &p.nextM); err != nil {
			return kit.FailBatch(len(reqs), err)
		}
		defer func() { <-pc.excl }()
	} else {
		pc = p.shared[int(p.next.Add(1))%len(p.shared)]
	}
	var rets *returnSet
	if exclusive {
		rets = newReturnSet()
	}
	var frameMax int
	open := func() (*amqp091.Channel, error) {
		ch, fm, err := pc.channel(ctx, p.sess, exclusive)
		if err != nil {
			return nil, err
		}
		frameMax = fm
		if exclusive {
			// Only this batch writes to the channel now: what is there
			// belongs to earlier publishes.
			drainReturns(pc.returns)
			rets.follow(pc.returns)
		}
		return ch, nil
	}
	type flight struct {
		k  int
		ch *amqp091.Channel
		dc *amqp091.DeferredConfirmation
	}
	var (
		flights   []flight
		head      int
		cut       bool // ctx ended while waiting for a confirm
		reopened  bool
		ch, chErr = open()
	)
	wait := func(f flight) {
		acked, err := f.dc.WaitContext(ctx)
		switch {
		case err != nil:
			errs[f.k], cut = err, true
		case !acked && f.ch.IsClosed():
			errs[f.k] = pc.closeReason(f.ch)
		case !acked:
			pc.retire(f.ch)
			errs[f.k] = errNacked
		}
	}
	for k, r := range reqs {
		if err := ctx.Err(); err != nil {
			errs[k] = err
			continue
		}
		if chErr != nil {
			errs[k] = chErr
			continue
		}
		if err := checkFrame(frameMax, &r.msg); err != nil {
			errs[k] = err
			continue
		}
		for ; len(flights)-head >= BatchWindow; head++ {
			wait(flights[head])
		}
		if err := p.sess.waitUnblocked(ctx); err != nil {
			errs[k] = err
			continue
		}
		dc, err := boundedPublish(ctx, ch, &r)
		if err != nil && errors.Is(err, amqp091.ErrClosed) && !reopened {
			reopened = true
			if ch, chErr = open(); chErr != nil {
				errs[k] = chErr
				continue
			}
			dc, err = boundedPublish(ctx, ch, &r)
		}
		var ab *broker.AbandonedError
		if errors.As(err, &ab) {
			// The channel is stuck in a write: the rest of the batch fails.
			errs[k], chErr = err, err
			cut = true
			continue
		}
		if err != nil {
			errs[k] = err
			if errors.Is(err, amqp091.ErrClosed) {
				chErr = err
			}
			continue
		}
		flights = append(flights, flight{k: k, ch: ch, dc: dc})
	}
	for ; head < len(flights); head++ {
		wait(flights[head])
	}
	if exclusive {
		returned := rets.finish()
		for _, f := range flights {
			r := reqs[f.k]
			if errs[f.k] != nil || !r.mandatory {
				continue
			}
			if ret, ok := returned[r.msg.MessageId]; ok {
				errs[f.k] = &ReturnedError{Exchange: ret.Exchange, RoutingKey: ret.RoutingKey, Code: ret.ReplyCode, Text: ret.ReplyText}
			}
		}
		if cut && ch != nil {
			// A late return would be taken for the next publish's.
			pc.discard(ch)
		}
	}
	return errs
}

// boundedPublish writes one message of a batch, bounded by ctx.
func boundedPublish(ctx context.Context, ch *amqp091.Channel, r *pubReq) (*amqp091.DeferredConfirmation, error) {
	return publishBounded(ctx, ch, r.exchange, r.key, r.mandatory, &r.msg)
}

// pubCall is one basic.publish run on a goroutine of its own (as bounded
// runs its function), with its arguments and its result. A call that
// returned in time is reused; one given up on (ctx ended first) belongs to
// its goroutine.
type pubCall struct {
	ch            *amqp091.Channel
	exchange, key string
	mandatory     bool
	msg           amqp091.Publishing
	dc            *amqp091.DeferredConfirmation
	err           error
	done          chan struct{} // one value per run
}

var pubCalls = sync.Pool{New: func() any { return &pubCall{done: make(chan struct{}, 1)} }}

func (c *pubCall) run() {
	c.dc, c.err = c.ch.PublishWithDeferredConfirm(c.exchange, c.key, c.mandatory, false, c.msg)
	c.done <- struct{}{}
}

// publishBounded writes msg on ch as bounded(ctx, "publishing", ...) would
// (the write goes on in the background when ctx ends first), with one
// reused call instead of a closure, a result channel and a copy of msg per
// publish.
func publishBounded(ctx context.Context, ch *amqp091.Channel, exchange, key string, mandatory bool, msg *amqp091.Publishing) (*amqp091.DeferredConfirmation, error) {
	c := pubCalls.Get().(*pubCall)
	c.ch, c.exchange, c.key, c.mandatory, c.msg = ch, exchange, key, mandatory, *msg
	if err := ctx.Err(); err != nil {
		go c.run()
		return nil, &broker.AbandonedError{What: "publishing", Err: err}
	}
	go c.run()
	select {
	case <-c.done:
		dc, err := c.dc, c.err
		*c = pubCall{done: c.done} // keeps no message alive
		pubCalls.Put(c)
		return dc, err
	case <-ctx.Done():
		return nil, &broker.AbandonedError{What: "publishing", Err: ctx.Err()}
	}
}

// returnSet collects the basic.returns of a batch by message id. RabbitMQ
// sends the return of a message before its confirm, so once every confirm
// is in, finish has every return.
type returnSet struct {
	mu   sync.Mutex
	byID map[string]amqp091.Return
	stop chan struct{}
	wg   sync.WaitGroup
}

func newReturnSet() *returnSet {
	return &returnSet{byID: map[string]amqp091.Return{}, stop: make(chan struct{})}
}

// follow reads the returns of one channel until it closes or finish.
func (rs *returnSet) follow(c <-chan amqp091.Return) {
	if c == nil {
		return
	}
	rs.wg.Add(1)
	go func() {
		defer rs.wg.Done()
		for {
			select {
			case r, ok := <-c:
				if !ok {
					return
				}
				rs.add(r)
			case <-rs.stop:
				for {
					select {
					case r, ok := <-c:
						if !ok {
							return
						}
						rs.add(r)
					default:
						return
					}
				}
			}
		}
	}()
}

func (rs *returnSet) add(r amqp091.Return) {
	rs.mu.Lock()
	rs.byID[r.MessageId] = r
	rs.mu.Unlock()
}

// finish stops following and returns the returns seen.
func (rs *returnSet) finish() map[string]amqp091.Return {
	close(rs.stop)
	rs.wg.Wait()
	return rs.byID
}

// drainReturns discards the returns waiting in c, left by earlier
// publishes. It returns once c is empty or closed (amqp091 closes it with
// the channel: a closed channel is always ready to receive).
func drainReturns(c chan amqp091.Return) {
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		default:
			return
		}
	}
}
