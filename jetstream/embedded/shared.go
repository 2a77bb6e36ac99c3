package embedded

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// shared servers of the nats-embedded:// URLs, by URL.
var shared = struct {
	sync.Mutex
	m map[string]*sharedServer
	// stopping holds the servers being shut down, by key: a new start of
	// the same store waits for the end of their shutdown.
	stopping map[string]chan struct{}
	// starting holds the servers being started, by key: another acquire
	// of the same key waits for that start (the lock is not held during a
	// start).
	starting map[string]chan struct{}
}{m: map[string]*sharedServer{}, stopping: map[string]chan struct{}{}, starting: map[string]chan struct{}{}}

type sharedServer struct {
	srv  *Server
	refs int
}

func acquire(ctx context.Context, key string, o Options) (*Server, error) {
	for {
		shared.Lock()
		if ss := shared.m[key]; ss != nil {
			ss.refs++
			shared.Unlock()
			return ss.srv, nil
		}
		wait, what := shared.stopping[key], "the last shutdown"
		if wait == nil {
			wait, what = shared.starting[key], "the start"
		}
		if wait == nil {
			break // still locked
		}
		shared.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("channels/jetstream/embedded: waiting for %s of the server: %w", what, ctx.Err())
		}
	}
	started := make(chan struct{})
	shared.starting[key] = started
	shared.Unlock()
	// Started without the lock: a slow start delays only the adapters of
	// the same key.
	srv, err := Start(o)
	shared.Lock()
	defer shared.Unlock()
	delete(shared.starting, key)
	close(started)
	if err != nil {
		return nil, err
	}
	shared.m[key] = &sharedServer{srv: srv, refs: 1}
	return srv, nil
}

// release drops a reference; the last one shuts the server down, bounded
// by ctx (DefaultShutdownTimeout without a deadline), without holding the
// process-wide lock.
func release(ctx context.Context, key string) error {
	shared.Lock()
	ss := shared.m[key]
	if ss == nil {
		shared.Unlock()
		return nil
	}
	if ss.refs--; ss.refs > 0 {
		shared.Unlock()
		return nil
	}
	delete(shared.m, key)
	done := make(chan struct{})
	shared.stopping[key] = done
	shared.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultShutdownTimeout)
		defer cancel()
	}
	return kit.Bounded(ctx, "shutdown of the embedded NATS server", func() error {
		ss.srv.Shutdown()
		shared.Lock()
		delete(shared.stopping, key)
		shared.Unlock()
		close(done)
		return nil
	})
}

func init() {
	broker.Register("EmbeddedNATS", []string{"nats-embedded"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			u = &url.URL{Scheme: "nats-embedded"}
		}
		if u.Host != "" {
			return nil, fmt.Errorf("%w: nats-embedded URLs take a store path (nats-embedded:///dir), not a host", broker.ErrInvalidOption)
		}
		q := u.Query()
		o := Options{StoreDir: u.Path, Listen: q.Get("listen")}
		switch st := q.Get("store"); st {
		case "":
		case "temporary", "temp":
			if o.StoreDir != "" {
				return nil, fmt.Errorf("%w: nats-embedded URL: a store path and store=temporary", broker.ErrInvalidOption)
			}
			o.Temporary = true
		default:
			return nil, fmt.Errorf("%w: nats-embedded URL: store=%q (only store=temporary)", broker.ErrInvalidOption, st)
		}
		return NewShared(o), nil
	})
}

// Adapter is a jetstream adapter on the process-wide embedded server of its
// URL: Connect starts the server (or shares the running one), Close
// releases it.
type Adapter struct {
	key  string
	opts Options

	state kit.ConnState
	mu    sync.Mutex
	inner *jetstream.Adapter
}

var (
	_ broker.Adapter        = (*Adapter)(nil)
	_ broker.LagReporter    = (*Adapter)(nil)
	_ broker.Limiter        = (*Adapter)(nil)
	_ broker.BatchPublisher = (*Adapter)(nil)
	_ broker.ChannelRemover = (*Adapter)(nil)

	_ broker.DeadLetterStore = (*Adapter)(nil)
	_ broker.MessageRemover  = (*Adapter)(nil)
	_ broker.Tailer          = (*Adapter)(nil)
	_ broker.ChannelLister   = (*Adapter)(nil)
)

// NewShared returns an adapter on the process-wide server of o (what
// nats-embedded:// URLs resolve to).
func NewShared(o Options) *Adapter {
	return &Adapter{key: fmt.Sprintf("%q %t %q %d %d %q %q", o.StoreDir, o.Temporary, o.Listen, o.MaxMemory, o.MaxStore,
		o.EncryptionKey, o.Cipher), opts: o}
}

// Name returns "NATS".
func (a *Adapter) Name() string { return "NATS" }

func (a *Adapter) adapter() *jetstream.Adapter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inner
}

// Connect starts (or shares) the server and connects in process.
func (a *Adapter) Connect(ctx context.Context, env broker.Env) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inner != nil {
		return nil
	}
	srv, err := acquire(ctx, a.key, a.opts)
	if err != nil {
		return err
	}
	if a.opts.StoreDir == "" && !a.opts.Temporary {
		if old, ok := legacyStoreDir(); ok {
			env.Normalize().Logger.Warn("channels/jetstream/embedded: a store of an earlier release (named by the executable alone) exists and is not used; "+
				"its messages are not delivered: set Options.StoreDir (nats-embedded:///dir) to it to keep using it, or remove it",
				"legacy_store", old, "store", srv.StoreDir())
		}
	}
	inner, err := srv.Adapter()
	if err == nil {
		err = inner.Connect(ctx, env)
	}
	if err != nil {
		_ = release(ctx, a.key)
		return err
	}
	a.inner = inner
	a.state.SetConnected()
	return nil
}

// Publish sends through the jetstream adapter.
func (a *Adapter) Publish(ctx context.Context, channel string, msg *broker.Outgoing) error {
	in := a.adapter()
	if in == nil {
		if err := a.state.Check(); err != nil {
			return err
		}
		return broker.ErrClosed
	}
	return in.Publish(ctx, channel, msg)
}

// Subscribe subscribes through the jetstream adapter.
func (a *Adapter) Subscribe(ctx context.Context, ch *broker.Channel) (broker.Subscription, error) {
	in := a.adapter()
	if in == nil {
		if err := a.state.Check(); err != nil {
			return nil, err
		}
		return nil, broker.ErrClosed
	}
	return in.Subscribe(ctx, ch)
}

// Lag reports the group's backlog through the jetstream adapter.
func (a *Adapter) Lag(ctx context.Context, channel, group string) (broker.GroupLag, error) {
	in := a.adapter()
	if in == nil {
		if err := a.state.Check(); err != nil {
			return broker.GroupLag{}, err
		}
		return broker.GroupLag{}, broker.ErrClosed
	}
	return in.Lag(ctx, channel, group)
}

// Limits reports the server's size limits through the jetstream adapter
// (zero before Connect).
func (a *Adapter) Limits() broker.Limits {
	if in := a.adapter(); in != nil {
		return in.Limits()
	}
	return broker.Limits{}
}

// PublishBatch sends a batch through the jetstream adapter.
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	in := a.adapter()
	if in == nil {
		err := a.state.Check()
		if err == nil {
			err = broker.ErrClosed
		}
		return kit.FailBatch(len(msgs), err)
	}
	return in.PublishBatch(ctx, channel, msgs)
}

// RemoveChannel removes a channel through the jetstream adapter.
func (a *Adapter) RemoveChannel(ctx context.Context, channel string) error {
	in := a.adapter()
	if in == nil {
		return broker.ErrNotConnected
	}
	return in.RemoveChannel(ctx, channel)
}

// connected returns the jetstream adapter, or the error of an adapter not
// connected (or closed).
func (a *Adapter) connected() (*jetstream.Adapter, error) {
	if in := a.adapter(); in != nil {
		return in, nil
	}
	if err := a.state.Check(); err != nil {
		return nil, err
	}
	return nil, broker.ErrClosed
}

// BrowseDeadLetters reads a dead-letter queue through the jetstream adapter.
func (a *Adapter) BrowseDeadLetters(ctx context.Context, queue string, fn func(*broker.StoredMessage) bool) error {
	in, err := a.connected()
	if err != nil {
		return err
	}
	return in.BrowseDeadLetters(ctx, queue, fn)
}

// RemoveDeadLetters removes dead letters through the jetstream adapter.
func (a *Adapter) RemoveDeadLetters(ctx context.Context, queue string, ids ...string) (int, error) {
	in, err := a.connected()
	if err != nil {
		return 0, err
	}
	return in.RemoveDeadLetters(ctx, queue, ids...)
}

// RemoveMessage removes a stored message through the jetstream adapter.
func (a *Adapter) RemoveMessage(ctx context.Context, channel, id string) error {
	in, err := a.connected()
	if err != nil {
		return err
	}
	return in.RemoveMessage(ctx, channel, id)
}

// Tail follows a channel through the jetstream adapter.
func (a *Adapter) Tail(ctx context.Context, channel string, fn func(*broker.StoredMessage) bool) error {
	in, err := a.connected()
	if err != nil {
		return err
	}
	return in.Tail(ctx, channel, fn)
}

// Channels lists the channels through the jetstream adapter.
func (a *Adapter) Channels(ctx context.Context, prefix string) ([]broker.ChannelInfo, error) {
	in, err := a.connected()
	if err != nil {
		return nil, err
	}
	return in.Channels(ctx, prefix)
}

// Close closes the jetstream adapter and releases the server.
func (a *Adapter) Close(ctx context.Context) error {
	a.mu.Lock()
	in := a.inner
	a.inner = nil
	a.state.SetClosed()
	a.mu.Unlock()
	if in == nil {
		return nil
	}
	err := in.Close(ctx)
	return errors.Join(err, release(ctx, a.key))
}
