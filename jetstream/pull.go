package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"
)

// puller pulls messages of one durable consumer on the NATS protocol
// itself: a pull request to $JS.API.CONSUMER.MSG.NEXT, answered on one
// standing inbox subscription. nats.go's pull consumers decide that a
// message is a server status by its headers (an empty message with a
// Status header), so a stored message of that shape, published by anyone,
// would never reach the adapter: it would end a pull, or be swallowed as a
// heartbeat, and come back every AckWait without bound. Here a message is
// a stream message when its reply subject is a JetStream acknowledgement
// subject ($JS.ACK.), whatever its headers: the server sends its statuses
// without a reply subject.
type puller struct {
	nc      *nats.Conn
	subject string // $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>
	inbox   string // <inbox>. (requests answer on <inbox>.<n>)
	sub     *nats.Subscription
	// arrive tracks a stream message as it reaches the inbox (reported in
	// progress from then on), whichever request it answers.
	arrive func(*nats.Msg) *delivery
	// orphan is told of a stream message that came while no request the
	// server may still answer was known (it is tracked all the same).
	orphan func(*nats.Msg)

	mu   sync.Mutex
	next uint64
	// open holds the requests the server may still answer, by reply
	// subject, with the time past which it answers them no more: a request
	// given up by fetch (no answer, a missed heartbeat, ctx), or whose
	// count of messages came (they may answer an earlier request), stays
	// there until then. asked lists their reply subjects in the order they
	// were made, for anyOpen; a subject no more in open is skipped there.
	open  map[string]time.Time
	asked []string

	// The inbox's messages, in order. A callback subscription feeding a
	// queue of our own: nats.go's NextMsg turns any empty message with a
	// Status 503 header into ErrNoResponders, stream messages included,
	// and a channel subscription drops messages when its channel is full.
	qmu    sync.Mutex
	q      []inboxEntry
	signal chan struct{}
	// late takes, once drain has handed over the inbox, a stream message
	// whose callback was under way then.
	late func([]*delivery)
}

// inboxEntry is a message of the inbox: a stream message, tracked on
// arrival (d), or a status of the server (status).
type inboxEntry struct {
	d      *delivery
	status *nats.Msg
}

// ackPrefix starts the reply subject of every message JetStream delivers.
const ackPrefix = "$JS.ACK."

func newPuller(nc *nats.Conn, stream, durable string, arrive func(*nats.Msg) *delivery, orphan func(*nats.Msg)) (*puller, error) {
	p := &puller{nc: nc, subject: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + durable, inbox: nc.NewRespInbox() + ".",
		arrive: arrive, orphan: orphan, open: map[string]time.Time{}, signal: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(p.inbox+"*", p.push)
	if err != nil {
		return nil, err
	}
	// A pull may bring up to MaxInFlight messages; never drop one for a
	// slow reader (the default pending limits are far above this anyway).
	_ = sub.SetPendingLimits(-1, 64<<20)
	p.sub = sub
	return p, nil
}

func (p *puller) push(m *nats.Msg) {
	var e inboxEntry
	if strings.HasPrefix(m.Reply, ackPrefix) {
		if !p.anyOpen() && p.orphan != nil {
			p.orphan(m)
		}
		e.d = p.arrive(m)
	} else {
		e.status = m
	}
	p.qmu.Lock()
	if late := p.late; late != nil {
		p.qmu.Unlock()
		if e.d != nil {
			late([]*delivery{e.d})
		}
		return
	}
	p.q = append(p.q, e)
	p.qmu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// anyOpen reports whether a request may still be answered by the server.
// It looks at the oldest requests first and forgets those ended or past
// their time, up to the first one still open: each request is looked at
// once more than it is forgotten, whatever the number of requests open.
func (p *puller) anyOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pruneLocked(time.Now())
}

// ask records a new request answered until expires and returns its reply
// subject and the subject to send it to.
func (p *puller) ask(expires time.Duration) (reply, subject string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	reply = p.inbox + strconv.FormatUint(p.next, 10)
	// The server answers until expires; a moment more for what is on its
	// way.
	now := time.Now()
	p.pruneLocked(now)
	p.open[reply] = now.Add(expires + time.Second)
	p.asked = append(p.asked, reply)
	return reply, p.subject
}

// pruneLocked forgets the oldest requests ended or past their time, up to
// the first one still open, and reports whether there is one. fetch calls
// it too, so that a subscription that receives nothing keeps no list of
// its past requests.
func (p *puller) pruneLocked(now time.Time) bool {
	for len(p.asked) > 0 {
		reply := p.asked[0]
		until, ok := p.open[reply]
		if ok && !now.After(until) {
			return true
		}
		delete(p.open, reply)
		p.asked[0] = ""
		p.asked = p.asked[1:]
	}
	return false
}

// ended forgets a request the server ended.
func (p *puller) ended(reply string) {
	p.mu.Lock()
	delete(p.open, reply)
	p.mu.Unlock()
}

// errPullSilent reports a pull that got nothing, not even an idle
// heartbeat, for twice the heartbeat interval: the server or the link is
// taken for dead and the pull is made again.
var errPullSilent = errors.New("channels/jetstream: pull missed its idle heartbeats")

// pop returns the oldest entry of the inbox, waiting for one until ctx
// ends, or, when idle > 0, for at most idle (errPullSilent).
func (p *puller) pop(ctx context.Context, idle time.Duration) (inboxEntry, error) {
	var silent <-chan time.Time
	if idle > 0 {
		t := time.NewTimer(idle)
		defer t.Stop()
		silent = t.C
	}
	for {
		p.qmu.Lock()
		if len(p.q) > 0 {
			e := p.q[0]
			p.q[0] = inboxEntry{}
			p.q = p.q[1:]
			p.qmu.Unlock()
			return e, nil
		}
		p.qmu.Unlock()
		select {
		case <-p.signal:
		case <-silent:
			return inboxEntry{}, errPullSilent
		case <-ctx.Done():
			return inboxEntry{}, ctx.Err()
		}
	}
}

// popStream returns the oldest entry of the inbox when it is a stream
// message, without waiting.
func (p *puller) popStream() *delivery {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	if len(p.q) == 0 || p.q[0].d == nil {
		return nil
	}
	d := p.q[0].d
	p.q[0] = inboxEntry{}
	p.q = p.q[1:]
	return d
}

// pullStatusError reports a pull the server ended with a status the adapter
// does not take as "no message now" (a 409 other than the ends of a
// request, a 400, ...).
type pullStatusError struct {
	code, description string
}

func (e *pullStatusError) Error() string {
	return fmt.Sprintf("channels/jetstream: pull ended by the server: %s %s", e.code, e.description)
}

// heartbeatFor is the idle heartbeat asked with a pull of this expiry:
// half of it, at most maxPullHeartbeat; none under minHeartbeatExpiry.
func heartbeatFor(expires time.Duration) time.Duration {
	if expires < minHeartbeatExpiry {
		return 0
	}
	return min(expires/2, maxPullHeartbeat)
}

const (
	maxPullHeartbeat   = 5 * time.Second
	minHeartbeatExpiry = 200 * time.Millisecond
	// heartbeatSlack is added to twice the heartbeat before a pull is
	// taken for dead.
	heartbeatSlack = 250 * time.Millisecond
)

// fetch asks for up to n messages, waiting at most expires for them, with
// an idle heartbeat hb (0: none), and hands the stream messages to hold as
// they are taken from the inbox (those already received together, in
// order, in one call). It returns when n messages came, when the server
// ended the request (no messages, timeout), when nothing came for twice
// hb (errPullSilent), or when ctx ends. A message that answers an earlier
// request (given up by an earlier fetch) is handed over too: it was
// tracked on arrival, and the server counts it delivered to this consumer.
//
// A status of the server comes on the request's own reply subject; a
// stream message carries its stream subject.
func (p *puller) fetch(ctx context.Context, n int, expires, hb time.Duration, hold func([]*delivery)) error {
	reply, subject := p.ask(expires)
	req := fmt.Appendf(nil, `{"batch":%d,"expires":%d}`, n, expires.Nanoseconds())
	var idle time.Duration
	if hb > 0 {
		req = fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d}`, n, expires.Nanoseconds(), hb.Nanoseconds())
		idle = 2*hb + heartbeatSlack
	}
	if err := p.nc.PublishRequest(subject, reply, req); err != nil {
		p.ended(reply)
		return err
	}
	// The server ends the request at expires (408); wait a little longer
	// for that answer before giving up on it.
	wctx, cancel := context.WithTimeout(ctx, expires+time.Second)
	defer cancel()
	got := 0
	for got < n {
		e, err := p.pop(wctx, idle)
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return nil // no answer at all: the next fetch asks again
			}
			return err
		}
		if e.d != nil {
			// A stream message shows its own subject, not the request's:
			// one answering an earlier request is counted here too (this
			// pull may then end early; the next one asks again).
			batch := []*delivery{e.d}
			got++
			for ; got < n; got++ {
				next := p.popStream()
				if next == nil {
					break
				}
				batch = append(batch, next)
			}
			hold(batch)
			continue
		}
		m := e.status
		if m.Subject != reply && strings.HasPrefix(m.Subject, p.inbox) {
			// The status of an earlier request.
			if done, _ := pullStatus(m); done {
				p.ended(m.Subject)
			}
			continue
		}
		if done, err := pullStatus(m); done {
			p.ended(reply)
			return err
		}
	}
	return nil
}

// pullStatus reads a status message of the server on a pull: done when it
// ends the request, with an error when that end is not "no message now".
func pullStatus(m *nats.Msg) (bool, error) {
	code, descr := m.Header.Get("Status"), m.Header.Get("Description")
	switch code {
	case "100": // idle heartbeat, flow control
		return false, nil
	case "404", "408": // no messages, request expired
		return true, nil
	case "409":
		d := strings.ToLower(descr)
		switch {
		case strings.Contains(d, "consumer deleted"):
			return true, js.ErrConsumerDeleted
		case strings.Contains(d, "batch completed"):
			return true, nil
		}
		// Exceeded MaxWaiting or a request limit, a leadership change, a
		// server shutdown: the request ended; the next one waits for the
		// back-off of a failed pull.
	case "503":
		return true, nats.ErrNoResponders
	case "":
		return false, nil // neither a stream message nor a status: not ours
	}
	return true, &pullStatusError{code: code, description: descr}
}

// drain stops the subscription and hands over the stream messages that
// reached it before the server saw the unsubscription, waiting for that at
// most minPullExpiry and never past ctx.
func (p *puller) drain(ctx context.Context, hold func([]*delivery)) {
	closed := p.sub.StatusChanged(nats.SubscriptionClosed)
	if p.sub.Drain() == nil {
		t := time.NewTimer(minPullExpiry)
		select {
		case <-closed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	_ = p.sub.Unsubscribe()
	p.qmu.Lock()
	q := p.q
	p.q = nil
	p.late = hold
	p.qmu.Unlock()
	var batch []*delivery
	for _, e := range q {
		if e.d != nil {
			batch = append(batch, e.d)
		}
	}
	if len(batch) > 0 {
		hold(batch)
	}
}

// rawMsg is a stream message pulled by a puller: the js.Msg of nats.go's
// pull consumers (Message.Raw), acknowledged on the JetStream protocol.
type rawMsg struct {
	*nats.Msg
	nc *nats.Conn
}

var _ js.Msg = (*rawMsg)(nil)

func (m *rawMsg) Data() []byte         { return m.Msg.Data }
func (m *rawMsg) Headers() nats.Header { return m.Msg.Header }
func (m *rawMsg) Subject() string      { return m.Msg.Subject }
func (m *rawMsg) Reply() string        { return m.Msg.Reply }
func (m *rawMsg) Ack() error           { return m.nc.Publish(m.Msg.Reply, []byte("+ACK")) }
func (m *rawMsg) Nak() error           { return m.nc.Publish(m.Msg.Reply, []byte("-NAK")) }
func (m *rawMsg) InProgress() error    { return m.nc.Publish(m.Msg.Reply, []byte("+WPI")) }
func (m *rawMsg) Term() error          { return m.nc.Publish(m.Msg.Reply, []byte("+TERM")) }

func (m *rawMsg) TermWithReason(reason string) error {
	return m.nc.Publish(m.Msg.Reply, []byte("+TERM "+reason))
}

func (m *rawMsg) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return m.Nak()
	}
	return m.nc.Publish(m.Msg.Reply, fmt.Appendf(nil, `-NAK {"delay":%d}`, delay.Nanoseconds()))
}

// DoubleAck acknowledges and waits for the server's confirmation.
func (m *rawMsg) DoubleAck(ctx context.Context) error {
	_, err := m.nc.RequestWithContext(ctx, m.Msg.Reply, []byte("+ACK"))
	return err
}

// Metadata parses the acknowledgement subject:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>,
// or with <domain>.<account hash>. before the stream (and a token after).
func (m *rawMsg) Metadata() (*js.MsgMetadata, error) {
	t := strings.Split(m.Msg.Reply, ".")
	switch {
	case len(t) == 9:
		t = t[2:]
	case len(t) >= 11:
		t = t[4:]
	default:
		return nil, js.ErrNotJSMessage
	}
	num := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
	md := &js.MsgMetadata{
		Stream:       t[0],
		Consumer:     t[1],
		NumDelivered: num(t[2]),
		Sequence:     js.SequencePair{Stream: num(t[3]), Consumer: num(t[4])},
		Timestamp:    time.Unix(0, int64(num(t[5]))),
		NumPending:   num(t[6]),
	}
	if md.NumDelivered == 0 || md.Sequence.Stream == 0 {
		return nil, js.ErrNotJSMessage
	}
	return md, nil
}
