package amqp

import (
	"context"
	"sync"

	"github.com/microchannels/channels/broker"
)

// live is what one Connect..Close cycle uses: a connection for sends
// (and the copies settling publishes: retries, dead letters) and
// declarations, and one for consuming, dialed at the first Subscribe. A
// connection RabbitMQ blocks (resource alarm: it stops reading publishing
// connections), a message that closes the consuming connection, or a
// publish that makes RabbitMQ close its connection then leaves the other
// one alone: acks go on while sends wait, sends go on while consumers
// reconnect. An adapter built on a given connection uses it for both.
type live struct {
	sess *session // publishing
	pub  *publisher
	topo *topology

	cmu      sync.Mutex
	consumer *session // consuming; nil until the first Subscribe
	mkCons   func() *session
	// dialing is closed when the dial of pendingCons ends.
	dialing     chan struct{}
	pendingCons *session
	// closed: closeConsuming ran; no consuming session is opened.
	closed bool

	mu   sync.Mutex
	subs map[string]map[*subscription]struct{} // by queue
}

func (l *live) remember(s *subscription) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = map[string]map[*subscription]struct{}{}
	}
	if l.subs[s.queue] == nil {
		l.subs[s.queue] = map[*subscription]struct{}{}
	}
	l.subs[s.queue][s] = struct{}{}
}

// forget is safe on a nil *live (the adapter closed meanwhile).
func (l *live) forget(s *subscription) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.subs[s.queue], s)
}

// consuming returns the consuming session, dialing it (bounded by ctx)
// the first time. The dial holds no lock, so closeConsuming does not wait
// for it; a session whose dial ends after closeConsuming is closed at once
// (ErrClosed).
func (l *live) consuming(ctx context.Context) (*session, error) {
	for {
		l.cmu.Lock()
		switch {
		case l.closed:
			l.cmu.Unlock()
			return nil, broker.ErrClosed
		case l.consumer != nil:
			c := l.consumer
			l.cmu.Unlock()
			return c, nil
		case l.sess.external != nil:
			l.consumer = l.sess
			l.cmu.Unlock()
			return l.sess, nil
		case l.dialing != nil:
			// Another Subscribe dials: wait for its outcome.
			dialing := l.dialing
			l.cmu.Unlock()
			select {
			case <-dialing:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		s := l.mkCons()
		dialing := make(chan struct{})
		l.dialing, l.pendingCons = dialing, s
		l.cmu.Unlock()
		err := s.start(ctx)
		l.cmu.Lock()
		l.dialing, l.pendingCons = nil, nil
		close(dialing)
		if err == nil && !l.closed {
			l.consumer = s
		}
		closed := l.closed
		l.cmu.Unlock()
		if err != nil {
			return nil, err
		}
		if closed {
			// closeConsuming ran during the dial: start closed what it
			// opened, or the connection is open and closed here.
			s.abort()
			return nil, broker.ErrClosed
		}
		return s, nil
	}
}

// closeConsuming closes the consuming session (when it is its own), and
// the one being dialed; no consuming session opens after it.
func (l *live) closeConsuming(ctx context.Context) error {
	l.cmu.Lock()
	l.closed = true
	c, p := l.consumer, l.pendingCons
	l.cmu.Unlock()
	if p != nil {
		// Its dial goes on in the background and closes what it opens.
		p.abort()
	}
	if c == nil || c == l.sess {
		return nil
	}
	return c.close(ctx)
}

// markRemoved tells the subscriptions of queue that it is being removed.
func (l *live) markRemoved(queue string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs[queue] {
		s.removed.Store(true)
	}
}

func (l *live) pending(queue string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for s := range l.subs[queue] {
		n += s.pending()
	}
	return n
}
