package amqp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

var (
	// errNacked: the broker refused the message (basic.nack).
	errNacked = errors.New("the broker refused the message (nack)")
	// errUnconfirmed: the channel closed after the message was written and
	// before the broker confirmed it; it may or may not have been taken.
	errUnconfirmed = errors.New("the channel closed before the broker confirmed the message")
	// errConfirmUnknown: the message was written and its confirm did not
	// come before the send's context ended; it may or may not have been
	// taken.
	errConfirmUnknown = errors.New("the message was written; its confirm did not come in time")
)

// ReturnedError reports a mandatory message that no queue received
// (basic.return). It is the cause of the *broker.PublishError.
type ReturnedError struct {
	Exchange   string
	RoutingKey string
	Code       uint16
	Text       string
}

func (e *ReturnedError) Error() string {
	return fmt.Sprintf("message returned by the broker as unroutable (exchange %q, routing key %q): %d %s",
		e.Exchange, e.RoutingKey, e.Code, e.Text)
}

// pubChan is one confirm-mode channel of the pool.
type pubChan struct {
	// opening is held while a channel is opened (bounded by the send's
	// context: a lock a send cannot give up would hang it on a frozen
	// link).
	opening chan struct{}
	mu      sync.Mutex // guards ch while it is replaced
	ch      *amqp091.Channel
	conn    *amqp091.Connection
	closes  chan *amqp091.Error
	// reason is why reasonOf closed, once read from closes: every message
	// left unconfirmed on that channel reports it.
	reason   error
	reasonOf *amqp091.Channel
	returns  chan amqp091.Return // mandatory channels only
	// excl serializes the mandatory publishes of the channel, so that a
	// basic.return (which RabbitMQ sends before the confirm) belongs to the
	// publish waiting on it; waiting for it is bounded by the send's context.
	excl chan struct{}
	// closed is the publisher's: set by close, after which no channel
	// opens.
	closed *atomic.Bool
}

// publisher is the pool of confirm-mode channels sends share. Sends without
// Mandatory go to the shared channels, where many wait for their confirms at
// once; mandatory sends (ours: retry copies and dead letters; users' with
// WithMandatory) go one at a time per channel to the mandatory ones.
type publisher struct {
	sess      *session
	shared    []*pubChan
	mandatory []*pubChan
	// settling are the mandatory channels of the adapter's own copies
	// (retries, dead letters, recounts, hand-backs), apart from users'
	// mandatory sends: a burst of failures does not wait behind them.
	settling []*pubChan
	nextS    atomic.Uint32
	next     atomic.Uint32
	nextM    atomic.Uint32
	closed   atomic.Bool
}

func newPublisher(sess *session, n int) *publisher {
	p := &publisher{sess: sess}
	mk := func() *pubChan {
		return &pubChan{opening: make(chan struct{}, 1), excl: make(chan struct{}, 1), closed: &p.closed}
	}
	for range n {
		p.shared = append(p.shared, mk())
	}
	for range max(n/2, 1) {
		p.mandatory = append(p.mandatory, mk())
	}
	for range max(n, DefaultSettlingChannels) {
		p.settling = append(p.settling, mk())
	}
	return p
}

// channel returns the open channel of pc, opening one on the current
// connection when needed, and the frame_max of its connection.
func (pc *pubChan) channel(ctx context.Context, sess *session, mandatory bool) (*amqp091.Channel, int, error) {
	pc.mu.Lock()
	if ch := pc.ch; ch != nil && !ch.IsClosed() {
		fm := pc.conn.Config.FrameSize
		pc.mu.Unlock()
		return ch, fm, nil
	}
	pc.mu.Unlock()
	select {
	case pc.opening <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	defer func() { <-pc.opening }()
	ch, err := pc.open(ctx, sess, mandatory)
	if err != nil {
		return nil, 0, err
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return ch, pc.conn.Config.FrameSize, nil
}

// open opens the channel of pc when it has none, holding opening.
func (pc *pubChan) open(ctx context.Context, sess *session, mandatory bool) (*amqp091.Channel, error) {
	pc.mu.Lock()
	if pc.ch != nil && !pc.ch.IsClosed() {
		defer pc.mu.Unlock()
		return pc.ch, nil
	}
	if pc.ch != nil {
		// The channel being replaced closed: keep its reason for the
		// messages still waiting on it.
		pc.takeReasonLocked(pc.ch)
	}
	pc.mu.Unlock()
	if pc.closed.Load() {
		return nil, broker.ErrClosed
	}
	c := sess.current()
	if c == nil {
		return nil, errDown
	}
	ch, err := openChannel(ctx, c, true)
	if err != nil {
		return nil, err
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed.Load() {
		// close ran during the open and did not see this channel.
		go func() { _ = ch.Close() }()
		return nil, broker.ErrClosed
	}
	pc.closes = ch.NotifyClose(make(chan *amqp091.Error, 1))
	if mandatory {
		pc.returns = ch.NotifyReturn(make(chan amqp091.Return, 4))
	}
	pc.ch, pc.conn = ch, c
	return ch, nil
}

// closeReason returns why ch closed, when it says so.
func (pc *pubChan) closeReason(ch *amqp091.Channel) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.ch == ch {
		pc.takeReasonLocked(ch)
	}
	if pc.reasonOf == ch && pc.reason != nil {
		return pc.reason
	}
	return errUnconfirmed
}

// takeReasonLocked reads the close notification of ch, the current
// channel, into reason. amqp091 marks a channel closed (and ends its
// confirmations) just before it notifies why, so it waits for that a
// little.
func (pc *pubChan) takeReasonLocked(ch *amqp091.Channel) {
	if pc.closes == nil || (pc.reasonOf == ch && pc.reason != nil) {
		return
	}
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case e, ok := <-pc.closes:
		if ok && e != nil {
			// Both wrapped: callers tell a 404 (a deleted exchange) by
			// its *amqp091.Error.
			pc.reason, pc.reasonOf = fmt.Errorf("%w: %w", errUnconfirmed, e), ch
		}
		pc.closes = nil
	case <-t.C:
	}
}

// discard closes ch (in the background: on a frozen link channel.close
// never ends) so the next send opens a fresh channel.
func (pc *pubChan) discard(ch *amqp091.Channel) {
	pc.mu.Lock()
	if pc.ch == ch {
		pc.ch = nil
	}
	pc.mu.Unlock()
	go func() { _ = ch.Close() }()
}

// retireAfter is how long a channel retired after a nack stays open, so
// that the confirms still awaited on it can come, before it is closed (a
// send still waiting then reports errUnconfirmed).
const retireAfter = DefaultOpTimeout

// retire detaches ch, which RabbitMQ nacked a message on, so that the next
// sends open a fresh channel, and closes it after retireAfter. A nack is
// rare (a queue that rejects publishes, a quorum queue without a leader),
// and a channel that first sent to a quorum queue while its leader was
// being elected can go on nacking every publish to it (seen with RabbitMQ
// 3.10 after the leader's node was lost) while a new channel is served.
func (pc *pubChan) retire(ch *amqp091.Channel) {
	pc.mu.Lock()
	mine := pc.ch == ch
	if mine {
		pc.ch = nil
	}
	pc.mu.Unlock()
	if mine {
		time.AfterFunc(retireAfter, func() { _ = ch.Close() })
	}
}

// publish sends msg and returns once the broker confirmed it: nil on
// basic.ack, an error on basic.nack, a basic.return of a mandatory message,
// a closed channel, or ctx ending first. An exclusive publish (every
// mandatory one, and the first to an exchange not known to exist) has a
// channel to itself until its confirm, so that an error closing the channel
// (404 for a missing exchange) fails no other send.
func (p *publisher) publish(ctx context.Context, exchange, key string, mandatory, exclusive bool, msg amqp091.Publishing) error {
	return p.publishOn(ctx, p.mandatory, &p.nextM, exchange, key, mandatory, exclusive, false, msg)
}

// settle publishes a copy of the adapter's own (mandatory, confirmed) on
// the settling channels.
func (p *publisher) settle(ctx context.Context, exchange, key string, msg amqp091.Publishing) error {
	return p.publishOn(ctx, p.settling, &p.nextS, exchange, key, true, false, false, msg)
}

// settleKeep is settle for a copy whose confirm may be waited for later:
// when ctx ends before the confirm while RabbitMQ blocked the connection
// (a resource alarm, which holds the message unread), the error is a
// *confirmPending that keeps the confirm (and the channel it comes on).
func (p *publisher) settleKeep(ctx context.Context, exchange, key string, msg amqp091.Publishing) error {
	return p.publishOn(ctx, p.settling, &p.nextS, exchange, key, true, false, true, msg)
}

// DefaultSettlingChannels is the least number of confirm channels that
// carry the adapter's own copies (retries, dead letters, hand-backs), one
// confirm at a time each.
const DefaultSettlingChannels = 8

// takeExcl takes a channel of pool to itself: a free one if there is one,
// else the next in turn once it is free, bounded by ctx.
func takeExcl(ctx context.Context, pool []*pubChan, next *atomic.Uint32) (*pubChan, error) {
	start := int(next.Add(1))
	for i := range pool {
		pc := pool[(start+i)%len(pool)]
		select {
		case pc.excl <- struct{}{}:
			return pc, nil
		default:
		}
	}
	pc := pool[start%len(pool)]
	select {
	case pc.excl <- struct{}{}:
		return pc, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *publisher) publishOn(ctx context.Context, excl []*pubChan, next *atomic.Uint32, exchange, key string, mandatory, exclusive, keep bool, msg amqp091.Publishing) error {
	err := p.publishOnce(ctx, excl, next, exchange, key, mandatory, exclusive, keep, msg)
	if !mandatory && !exclusive && errors.Is(err, amqp091.ErrClosed) && ctx.Err() == nil {
		// The shared channel was closed under it twice before the message
		// went out (concurrent sends to a deleted exchange close it, each
		// in turn): send it on a channel of its own.
		return p.publishOnce(ctx, excl, next, exchange, key, mandatory, true, false, msg)
	}
	if collateral(err, exchange) && ctx.Err() == nil {
		// Another send closed the shared channel (its exchange was
		// deleted): RabbitMQ discards what follows the failing publish on
		// the channel, so this message is sent again, on a channel it has
		// to itself, where no other send can close it (at-least-once: one
		// written before the failing publish may have been taken).
		err = p.publishOnce(ctx, excl, next, exchange, key, mandatory, true, false, msg)
	}
	return err
}

// collateral reports a publish whose channel was closed by a 404 about
// another exchange than its own, after it was written.
func collateral(err error, exchange string) bool {
	if err == nil {
		return false
	}
	ex, ok := missingExchange(err)
	return ok && ex != exchange && errors.Is(err, errUnconfirmed)
}

func (p *publisher) publishOnce(ctx context.Context, excl []*pubChan, next *atomic.Uint32, exchange, key string, mandatory, exclusive, keep bool, msg amqp091.Publishing) error {
	var pc *pubChan
	kept := false // the channel went to a pendingConfirm
	if mandatory || exclusive {
		var err error
		if pc, err = takeExcl(ctx, excl, next); err != nil {
			return err
		}
		defer func() {
			if !kept {
				<-pc.excl
			}
		}()
	} else {
		pc = p.shared[int(p.next.Add(1))%len(p.shared)]
	}
	var (
		ch  *amqp091.Channel
		dc  *amqp091.DeferredConfirmation
		err error
	)
	epoch := p.sess.blockEpoch()
	// A channel found closed before the message went out is replaced once.
	for try := 0; try < 2; try++ {
		var frameMax int
		if ch, frameMax, err = pc.channel(ctx, p.sess, mandatory || exclusive); err != nil {
			return err
		}
		if err := checkFrame(frameMax, &msg); err != nil {
			return err
		}
		if err := p.sess.waitUnblocked(ctx); err != nil {
			return err
		}
		if mandatory || exclusive {
			drainReturns(pc.returns)
		}
		shared := !mandatory && !exclusive
		// The write is bounded by ctx: a message larger than the socket's
		// buffer (or any, behind one) blocks on a frozen link.
		dc, err = publishBounded(ctx, ch, exchange, key, mandatory, &msg)
		if err == nil {
			break
		}
		var ab *broker.AbandonedError
		if errors.As(err, &ab) && !shared {
			pc.discard(ch)
		}
		if !errors.Is(err, amqp091.ErrClosed) {
			return err
		}
	}
	if err != nil {
		return err
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		if keep && mandatory && p.sess.blockedSince(epoch) {
			// RabbitMQ holds the message unread until the alarm ends, then
			// confirms it: the confirm is kept for the caller.
			kept = true
			return &confirmPending{err: fmt.Errorf("%w: %w", errConfirmUnknown, err), pend: &pendingConfirm{pc: pc, ch: ch, dc: dc}}
		}
		if mandatory || exclusive {
			// A late return would be taken for the next publish's.
			pc.discard(ch)
		}
		return fmt.Errorf("%w: %w", errConfirmUnknown, err)
	}
	if mandatory || exclusive {
		select {
		case r, ok := <-pc.returns:
			if !ok { // closed with the channel
				break
			}
			return &ReturnedError{Exchange: r.Exchange, RoutingKey: r.RoutingKey, Code: r.ReplyCode, Text: r.ReplyText}
		default:
		}
	}
	if !acked {
		if ch.IsClosed() {
			// Closed before the broker confirmed it, even when it was
			// written before the publish that closed the channel: a
			// send without a confirm is never reported sent. A 404 about
			// another exchange makes publishOn send it again
			// (at-least-once).
			return pc.closeReason(ch)
		}
		pc.retire(ch)
		return errNacked
	}
	return nil
}

// missingExchange reads the exchange of a 404 "no exchange 'X' in vhost".
func missingExchange(err error) (string, bool) {
	var e *amqp091.Error
	if !errors.As(err, &e) || e.Code != amqp091.NotFound {
		return "", false
	}
	const pre = "no exchange '"
	i := strings.Index(e.Reason, pre)
	if i < 0 {
		return "", false
	}
	rest := e.Reason[i+len(pre):]
	j := strings.LastIndex(rest, "' in vhost")
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

// close closes the pool's channels, bounded by ctx; no channel opens after
// it (a send in flight fails with ErrClosed).
func (p *publisher) close(ctx context.Context) error {
	p.closed.Store(true)
	var chs []*amqp091.Channel
	for _, pc := range append(append(append([]*pubChan(nil), p.shared...), p.mandatory...), p.settling...) {
		pc.mu.Lock()
		if pc.ch != nil {
			chs = append(chs, pc.ch)
			pc.ch = nil
		}
		pc.mu.Unlock()
	}
	return bounded(ctx, "closing the publishing channels", func() error {
		for _, ch := range chs {
			_ = ch.Close()
		}
		return nil
	})
}
