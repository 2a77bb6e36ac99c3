package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/microchannels/channels/kit"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/microchannels/channels/broker"
)

func init() {
	broker.Register("AMQP", []string{"amqp", "amqps"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			return New(DefaultURL)
		}
		return New(u.String())
	})
}

// Adapter implements broker.Adapter on RabbitMQ (AMQP 0-9-1).
type Adapter struct {
	urls     []string
	config   amqp091.Config
	external *amqp091.Connection
	display  string

	chanOpts         ChannelOptions
	pubChannels      int
	noAssertExchange bool
	reconnect        broker.Backoff
	// mgmtURL is the management API of WithManagementURL ("" derives it
	// from the AMQP URL).
	mgmtURL string

	idPrefix string
	idSeq    atomic.Uint64

	state kit.ConnState
	// live is read without a lock on every send: nil before Connect and
	// from the start of Close.
	live atomic.Pointer[live]
	mu   sync.Mutex
	env  broker.Env
	subs kit.Subscriptions
	// groups are the groups subscribed per channel since New (RemoveChannel
	// deletes their queues: AMQP cannot list the queues bound to an
	// exchange).
	groupsMu sync.Mutex
	groups   map[string]map[string]bool
	// retries are the retry queues declared per group queue since New.
	retries map[string]map[string]bool
	// deadLetters are the dead-letter exchanges and queues of the
	// subscriptions since New (name -> true for a queue, which also has an
	// exchange of its name).
	deadLetters map[string]bool
	// dlExchanges are, per channel subscribed and per dead-letter queue of
	// those subscriptions, the dead-letter exchanges (other than the one
	// named like the queue) the subscriptions declared: RemoveChannel of
	// that name deletes them once no queue is bound to them.
	dlExchanges map[string]map[string]bool
}

// noHeaders is the table of a send without headers; it is only read.
var noHeaders = amqp091.Table{broker.HeaderRedeliveredCount: int32(0)}

var _ broker.Adapter = (*Adapter)(nil)

// New builds an adapter from an amqp:// or amqps:// URL, or a ';'-separated
// failover list of them (tried in turn, one per connection attempt). It
// does not connect.
func New(rawURL string, opts ...Option) (*Adapter, error) {
	urls, err := parseURLs(rawURL)
	if err != nil {
		return nil, err
	}
	shown := make([]string, len(urls))
	for i, u := range urls {
		shown[i] = displayURL(u)
	}
	return newAdapter(urls, nil, strings.Join(shown, ";"), opts)
}

// NewFromClient uses an existing connection. The caller keeps its
// lifetime: Close does not close it, and when it is lost the adapter cannot
// dial it again (consumers then wait, sends fail). Channel-level failures
// are recovered as with New. A connection with amqp091's automatic
// Recovery is refused: it reopens channels in place with delivery tags
// starting again at 1, which the adapter's acknowledgements cannot tell
// from the old ones.
func NewFromClient(conn *amqp091.Connection, opts ...Option) (*Adapter, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: amqp connection is nil", broker.ErrInvalidOption)
	}
	if conn.Config.Recovery != nil {
		return nil, fmt.Errorf("%w: amqp connection has Config.Recovery set: its channels are reopened in place with "+
			"delivery tags from 1 again, which would acknowledge the wrong messages; dial it without Recovery "+
			"(the adapter recovers channels itself)", broker.ErrInvalidOption)
	}
	return newAdapter(nil, conn, "connection", opts)
}

// NewFromConnection is NewFromClient.
//
// Deprecated: use [NewFromClient], the name every adapter uses.
func NewFromConnection(conn *amqp091.Connection, opts ...Option) (*Adapter, error) {
	return NewFromClient(conn, opts...)
}

func newAdapter(urls []string, conn *amqp091.Connection, display string, opts []Option) (*Adapter, error) {
	a := &Adapter{urls: urls, external: conn, display: display, pubChannels: DefaultPublisherChannels,
		reconnect: kit.DefaultReconnectBackoff}
	if err := kit.ApplyOptions(a, opts); err != nil {
		return nil, err
	}
	if a.config.TLSClientConfig != nil {
		for _, u := range urls {
			if !strings.HasPrefix(strings.ToLower(u), "amqps://") {
				// amqp091 dials amqp:// in plaintext whatever the TLS
				// configuration says: the user name and password would
				// cross the network in the clear.
				return nil, fmt.Errorf("%w: amqp: a TLS configuration is set but %s is an amqp:// URL, which is dialed without TLS (credentials in plaintext): use amqps://",
					broker.ErrInvalidOption, displayURL(u))
			}
		}
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	a.idPrefix = hex.EncodeToString(b[:]) + "-"
	return a, nil
}

// Name returns "AMQP".
func (a *Adapter) Name() string { return "AMQP" }

// String describes the target without credentials.
func (a *Adapter) String() string { return "amqp " + a.display }

// Connection returns the current connection for sends and declarations
// (nil before Connect, after Close and while reconnecting).
func (a *Adapter) Connection() *amqp091.Connection {
	if l := a.live.Load(); l != nil {
		return l.sess.current()
	}
	return nil
}

// ConsumerConnection returns the current connection of the consumers (nil
// before the first Subscribe, after Close and while reconnecting). It is
// Connection() for an adapter built with NewFromClient.
func (a *Adapter) ConsumerConnection() *amqp091.Connection {
	if l := a.live.Load(); l != nil {
		l.cmu.Lock()
		c := l.consumer
		l.cmu.Unlock()
		if c != nil {
			return c.current()
		}
	}
	return nil
}

// Connect dials RabbitMQ (each URL of the failover list once, bounded by
// ctx); a lost connection is dialed again in the background until Close.
func (a *Adapter) Connect(ctx context.Context, env broker.Env) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Connected() {
		return nil
	}
	a.env = env.Normalize()
	sess := newSession(a, a.env.Logger, "channels-publish")
	if err := sess.start(ctx); err != nil {
		return err
	}
	log := a.env.Logger
	topo := newTopology(sess)
	topo.onRetry = a.noteRetry
	a.live.Store(&live{sess: sess, pub: newPublisher(sess, a.pubChannels), topo: topo,
		mkCons: func() *session { return newSession(a, log, "channels-consume") }})
	a.state.SetConnected()
	return nil
}

// nextID returns a unique message id.
func (a *Adapter) nextID() string {
	return a.idPrefix + strconv.FormatUint(a.idSeq.Add(1), 36)
}

// liveOrErr returns the connected cycle, or why there is none.
func (a *Adapter) liveOrErr() (*live, error) {
	l := a.live.Load()
	if l == nil {
		if err := a.state.Check(); err != nil {
			return nil, err
		}
		return nil, broker.ErrClosed
	}
	return l, nil
}

// Close drains the subscriptions still running (bounded by ctx), then
// closes the publishing channels and the connection it dialed.
func (a *Adapter) Close(ctx context.Context) error {
	a.mu.Lock()
	if !a.state.Connected() {
		a.state.SetClosed()
		a.mu.Unlock()
		return nil
	}
	l := a.live.Swap(nil) // no send after this point
	a.mu.Unlock()
	errs := []error{a.subs.DrainAll(ctx)}
	a.mu.Lock()
	a.state.SetClosed()
	a.mu.Unlock()
	if l != nil {
		errs = append(errs, l.pub.close(ctx))
		var wg sync.WaitGroup
		var cerr error
		wg.Add(1)
		go func() { defer wg.Done(); cerr = l.closeConsuming(ctx) }()
		errs = append(errs, l.sess.close(ctx))
		wg.Wait()
		errs = append(errs, cerr)
	}
	return errors.Join(errs...)
}
