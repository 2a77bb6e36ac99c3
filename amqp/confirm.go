package amqp

import (
	"context"
	"fmt"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// confirmPending is the error of a copy written while RabbitMQ blocked the
// connection whose confirm did not come in time: pend waits for it later.
// Its owner must call pend.wait until it settles, or pend.abandon.
type confirmPending struct {
	err  error // wraps errConfirmUnknown
	pend *pendingConfirm
}

func (e *confirmPending) Error() string { return e.err.Error() }
func (e *confirmPending) Unwrap() error { return e.err }

// pendingConfirm is the confirm still to come of a mandatory publish; it
// holds the channel (pc.excl) until it settles or is abandoned, so that a
// basic.return that comes belongs to it.
type pendingConfirm struct {
	pc   *pubChan
	ch   *amqp091.Channel
	dc   *amqp091.DeferredConfirmation
	once sync.Once
}

// wait waits for the confirm, bounded by ctx. settled is false when ctx
// ended first (the confirm is still pending and may be waited for again);
// otherwise err is nil for a message RabbitMQ took, or its refusal (nack,
// return, the channel closed), and the channel is given up.
func (c *pendingConfirm) wait(ctx context.Context) (err error, settled bool) {
	acked, werr := c.dc.WaitContext(ctx)
	if werr != nil {
		return fmt.Errorf("%w: %w", errConfirmUnknown, werr), false
	}
	select {
	case r, ok := <-c.pc.returns:
		if ok {
			c.release(false)
			return &ReturnedError{Exchange: r.Exchange, RoutingKey: r.RoutingKey, Code: r.ReplyCode, Text: r.ReplyText}, true
		}
	default:
	}
	if !acked {
		if c.ch.IsClosed() {
			err = c.pc.closeReason(c.ch)
		} else {
			err = errNacked
		}
	}
	c.release(false)
	return err, true
}

// abandon gives the channel up without the confirm: it is closed (a late
// return would be taken for another publish's).
func (c *pendingConfirm) abandon() { c.release(true) }

func (c *pendingConfirm) release(discard bool) {
	c.once.Do(func() {
		if discard {
			c.pc.discard(c.ch)
		}
		<-c.pc.excl
	})
}
