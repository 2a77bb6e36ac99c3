package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

// errDown is the cause of a send made while the connection is being
// re-established.
var errDown = errors.New("connection to RabbitMQ lost; reconnecting")

// session owns the AMQP connection of one Connect..Close cycle: it dials the
// failover list, and when the connection is lost it dials again (with the
// reconnect backoff) until Close. Consumers and publishers ask it for the
// current connection and wait for the next one.
type session struct {
	urls     []string
	config   amqp091.Config
	external *amqp091.Connection
	backoff  broker.Backoff
	log      *slog.Logger
	// name is the connection name RabbitMQ shows (client property
	// connection_name), unless the configuration sets one.
	name string

	// blocked is set while RabbitMQ blocks the connection (connection.blocked:
	// a memory or disk alarm); unblocked is closed when it ends.
	blockMu   sync.Mutex
	blocked   string
	unblocked chan struct{}
	blocks    uint64 // connection.blocked received so far

	mu      sync.Mutex
	conn    *amqp091.Connection
	gen     uint64
	changed chan struct{} // closed (and replaced) whenever conn changes
	next    int           // next URL of the failover list to try
	closed  chan struct{}
	done    chan struct{} // the supervisor has returned
}

func newSession(a *Adapter, log *slog.Logger, name string) *session {
	return &session{urls: a.urls, config: a.config, external: a.external, backoff: a.reconnect, log: log, name: name,
		changed: make(chan struct{}), closed: make(chan struct{}), done: make(chan struct{})}
}

// errBlocked is the cause of a send given up while RabbitMQ blocked the
// connection.
var errBlocked = errors.New("RabbitMQ blocks publishing on this connection (resource alarm)")

// start connects (each URL of the failover list once, bounded by ctx and
// by the session's close) and starts the supervisor. A connection dialed
// after close is closed at once (ErrClosed).
func (s *session) start(ctx context.Context) error {
	c := s.external
	if c == nil {
		dctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-s.closed:
				cancel()
			case <-dctx.Done():
			}
		}()
		var err error
		c, err = s.dialAll(dctx)
		cancel()
		if err != nil {
			close(s.done)
			return err
		}
	} else if c.IsClosed() {
		close(s.done)
		return fmt.Errorf("channels/amqp: the given connection is closed")
	}
	if !s.setOpen(c) {
		if s.external == nil {
			_ = c.Close()
		}
		close(s.done)
		return broker.ErrClosed
	}
	go s.supervise(c)
	return nil
}

// dialAll tries every URL once, starting with the next one of the list.
func (s *session) dialAll(ctx context.Context) (*amqp091.Connection, error) {
	var errs []error
	for range s.urls {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		s.mu.Lock()
		raw := s.urls[s.next%len(s.urls)]
		s.next++
		s.mu.Unlock()
		c, err := s.dial(ctx, raw)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %s", displayURL(raw), broker.Redact(err.Error())))
	}
	return nil, fmt.Errorf("channels/amqp: connect: %w", errors.New(errors.Join(errs...).Error()))
}

func (s *session) dial(ctx context.Context, raw string) (*amqp091.Connection, error) {
	cfg := s.config
	if cfg.TLSClientConfig != nil {
		// amqp091 writes the host of the URL into ServerName when it is
		// empty: each dial gets its own copy, so the next host of a
		// failover list is verified against its own name and the caller's
		// configuration is never changed.
		cfg.TLSClientConfig = cfg.TLSClientConfig.Clone()
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Dial == nil {
		timeout := DefaultDialTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, max(time.Until(dl), time.Millisecond))
		}
		cfg.Dial = func(network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the TLS and AMQP handshakes; cleared by amqp091 after.
			if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		}
	}
	// amqp091 writes into Properties while it opens the connection: each
	// dial gets its own copy (the publishing and consuming sessions dial
	// at once after a broker restart).
	props := amqp091.NewConnectionProperties()
	maps.Copy(props, cfg.Properties)
	if _, ok := props["connection_name"]; !ok {
		props.SetClientConnectionName(s.name)
	}
	cfg.Properties = props
	return amqp091.DialConfig(raw, cfg)
}

// openChannel opens a channel on c (in confirm mode when confirm is set),
// bounded by ctx: on a frozen link channel.open never gets its answer. A
// channel opened after ctx ended is closed in the background.
func openChannel(ctx context.Context, c *amqp091.Connection, confirm bool) (*amqp091.Channel, error) {
	type result struct {
		ch  *amqp091.Channel
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, err := c.Channel()
		if err == nil && confirm {
			if err = ch.Confirm(false); err != nil {
				go func(ch *amqp091.Channel) { _ = ch.Close() }(ch)
				ch = nil
			}
		}
		done <- result{ch, err}
	}()
	select {
	case r := <-done:
		return r.ch, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.ch != nil {
				_ = r.ch.Close()
			}
		}()
		return nil, &broker.AbandonedError{What: "opening an AMQP channel", Err: ctx.Err()}
	}
}

// bounded runs f and returns its error, or a *broker.AbandonedError as soon
// as ctx ends first (f goes on in the background). Unlike kit.Bounded it
// gives f no grace past the deadline: the adapter's own waits (a write, a
// channel's close, basic.cancel) end at it, so the steps that contain them
// (a drain, Close) can still return their own error in time.
func bounded(ctx context.Context, what string, f func() error) error {
	if ctx.Err() != nil {
		go func() { _ = f() }()
		return &broker.AbandonedError{What: what, Err: ctx.Err()}
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return &broker.AbandonedError{What: what, Err: ctx.Err()}
	}
}

// closeChannel closes ch, bounded by ctx (channel.close waits for the
// broker's answer); an already closed channel is not an error.
func closeChannel(ctx context.Context, ch *amqp091.Channel) error {
	if ch == nil {
		return nil
	}
	err := bounded(ctx, "closing an AMQP channel", ch.Close)
	if errors.Is(err, amqp091.ErrClosed) {
		return nil
	}
	return err
}

func (s *session) set(c *amqp091.Connection) {
	s.setBlocked(false, "")
	if c != nil {
		s.watchBlocked(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(c)
}

func (s *session) setLocked(c *amqp091.Connection) {
	s.conn = c
	s.gen++
	close(s.changed)
	s.changed = make(chan struct{})
}

// setOpen makes c the session's connection unless the session is closed
// (false: the caller closes c). It is atomic with close, which closes the
// connection it finds.
func (s *session) setOpen(c *amqp091.Connection) bool {
	s.setBlocked(false, "")
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
		return false
	default:
	}
	s.watchBlocked(c)
	s.setLocked(c)
	return true
}

// generation counts the connections of the session (what one connection
// learnt about the broker may be stale on the next).
func (s *session) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// current returns the live connection, nil while reconnecting.
func (s *session) current() *amqp091.Connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.conn.IsClosed() {
		return nil
	}
	return s.conn
}

// wait returns the live connection, waiting for the next one while
// reconnecting; false when stop or the session closed first.
func (s *session) wait(stop <-chan struct{}) (*amqp091.Connection, bool) {
	for {
		s.mu.Lock()
		c, changed := s.conn, s.changed
		s.mu.Unlock()
		if c != nil && !c.IsClosed() {
			return c, true
		}
		select {
		case <-changed:
		case <-stop:
			return nil, false
		case <-s.closed:
			return nil, false
		case <-time.After(time.Second): // the supervisor may not have noticed yet
		}
	}
}

// StableAfter is how long a connection (or a consumer) must have lived for
// its loss to be taken as a new incident: the reconnect backoff starts over
// from its first delay. One lost sooner keeps backing off, so that a
// connection that dies right after it opened (a message the client library
// cannot read, delivered on every new connection) is not dialed again in a
// tight loop.
const StableAfter = 10 * time.Second

// supervise watches the connection and dials again when it is lost.
func (s *session) supervise(c *amqp091.Connection) {
	defer close(s.done)
	rc := kit.Reconnect{Backoff: s.backoff}
	for {
		opened := time.Now()
		lost := c.NotifyClose(make(chan *amqp091.Error, 1))
		var cause *amqp091.Error
		select {
		case cause = <-lost:
		case <-s.closed:
			return
		}
		select {
		case <-s.closed:
			return
		default:
		}
		s.set(nil)
		if s.external != nil {
			s.log.Error("channels/amqp: the connection given to NewFromClient was closed; the adapter cannot dial it again",
				"error", errString(cause))
			return
		}
		if time.Since(opened) >= StableAfter {
			rc.Succeeded()
			s.log.Warn("channels/amqp: connection lost, reconnecting", "error", errString(cause))
		} else {
			s.log.Warn("channels/amqp: connection lost soon after it opened, reconnecting after a backoff",
				"error", errString(cause), "lived", time.Since(opened).Round(time.Millisecond), "in", rc.Next())
			if _, ok := rc.Failed(s.closed); !ok {
				return
			}
		}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), DefaultDialTimeout)
			go func() {
				select {
				case <-s.closed:
					cancel()
				case <-ctx.Done():
				}
			}()
			nc, err := s.dialAll(ctx)
			cancel()
			if err == nil {
				if !s.setOpen(nc) {
					_ = nc.Close()
					return
				}
				c = nc
				s.log.Info("channels/amqp: reconnected")
				break
			}
			s.log.Warn("channels/amqp: reconnect failed", "error", err.Error(), "in", rc.Next())
			if _, ok := rc.Failed(s.closed); !ok {
				return
			}
		}
	}
}

// abort closes the session without waiting: a dial under way closes what
// it opens, and a connection already opened is closed in the background
// (on a frozen link the close handshake would not end).
func (s *session) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	if c := s.conn; c != nil && s.external == nil {
		s.conn = nil
		go func() { _ = c.Close() }()
	}
}

// close stops the supervisor and closes the connection it dialed.
func (s *session) close(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return nil
	default:
	}
	close(s.closed)
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	var err error
	if s.external == nil && c != nil && !c.IsClosed() {
		// The connection is closed even when ctx has run out (a drain that
		// timed out): the close handshake gets closeGrace more, so the
		// acks written last are read by RabbitMQ before the socket closes.
		// On a frozen link CloseDeadline gives up at the deadline and
		// closes the socket.
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(DefaultOpTimeout)
		}
		deadline = later(deadline, time.Now().Add(closeGrace))
		if cerr := c.CloseDeadline(deadline); cerr != nil && !errors.Is(cerr, amqp091.ErrClosed) {
			err = fmt.Errorf("channels/amqp: close: %s", broker.Redact(cerr.Error()))
		}
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	return err
}

// closeGrace is how long a connection's close handshake may go on after the
// context of Close ended.
const closeGrace = 40 * time.Millisecond

func errString(e *amqp091.Error) string {
	if e == nil {
		return "closed"
	}
	return broker.Redact(e.Error())
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
