// Package embedded runs a NATS server with JetStream inside the process
// (github.com/nats-io/nats-server/v2), so that channels work with no broker
// to install: the default of `make demo` and examples/quickstart. It lives
// in its own package so that only programs importing it link the server.
//
// Importing it registers the URL scheme nats-embedded:
//
//	nats-embedded://                      in-process only, store in a temp dir removed at the end
//	nats-embedded:///var/lib/app/nats     store kept in that directory
//	nats-embedded://?listen=127.0.0.1:4222  also accept TCP clients (other processes, the nats CLI)
//
// Every adapter resolved from the same URL in one process shares one server
// (as the members of a group share a broker); it starts with the first
// Connect and shuts down with the last Close. For a server of your own, use
// Start and Server.Adapter.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
)

// Defaults of the embedded server.
const (
	// DefaultMaxMemory bounds the JetStream memory store.
	DefaultMaxMemory = 256 << 20
	// DefaultMaxStore bounds the JetStream file store.
	DefaultMaxStore = 1 << 30
	// DefaultReadyTimeout bounds the start of the server.
	DefaultReadyTimeout = 10 * time.Second
)

// Options configure an embedded server.
type Options struct {
	// StoreDir keeps the JetStream store; empty: a temporary directory
	// removed by Shutdown.
	StoreDir string
	// Listen is a host:port to accept TCP clients on ("127.0.0.1:-1" picks
	// a free port); empty: in-process connections only.
	Listen string
	// MaxMemory and MaxStore bound JetStream (defaults DefaultMaxMemory,
	// DefaultMaxStore).
	MaxMemory, MaxStore int64
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	srv    *server.Server
	tmp    string
	listen bool
}

// Start runs a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	s := &Server{}
	dir := o.StoreDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "channels-nats-")
		if err != nil {
			return nil, fmt.Errorf("channels/jetstream/embedded: store dir: %w", err)
		}
		dir, s.tmp = tmp, tmp
	}
	so := &server.Options{JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true, ServerName: "channels-embedded",
		JetStreamMaxMemory: o.MaxMemory, JetStreamMaxStore: o.MaxStore}
	if so.JetStreamMaxMemory == 0 {
		so.JetStreamMaxMemory = DefaultMaxMemory
	}
	if so.JetStreamMaxStore == 0 {
		so.JetStreamMaxStore = DefaultMaxStore
	}
	if o.Listen == "" {
		so.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			s.cleanup()
			return nil, fmt.Errorf("%w: embedded listen address %q: %v", broker.ErrInvalidOption, o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			s.cleanup()
			return nil, fmt.Errorf("%w: embedded listen port %q", broker.ErrInvalidOption, port)
		}
		so.Host, so.Port = host, p
		s.listen = true
	}
	srv, err := server.NewServer(so)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("channels/jetstream/embedded: %w", err)
	}
	s.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(DefaultReadyTimeout) {
		s.Shutdown()
		return nil, errors.New("channels/jetstream/embedded: the server did not become ready")
	}
	return s, nil
}

// ClientURL is the nats:// URL of the TCP listener ("" without Listen).
func (s *Server) ClientURL() string {
	if !s.listen {
		return ""
	}
	return s.srv.ClientURL()
}

// Connect opens an in-process connection to the server.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(s.srv)}, opts...)...)
}

// Adapter returns a channels adapter on this server, connected in process;
// the adapter owns its connection, the caller keeps the server's lifetime.
func (s *Server) Adapter(opts ...jetstream.Option) (*jetstream.Adapter, error) {
	return jetstream.New("nats://in-process:0", append([]jetstream.Option{
		jetstream.WithNATSOptions(nats.InProcessServer(s.srv))}, opts...)...)
}

// Shutdown stops the server and removes a temporary store.
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	s.cleanup()
}

func (s *Server) cleanup() {
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
		s.tmp = ""
	}
}

// shared servers of the nats-embedded:// URLs, by URL.
var shared = struct {
	sync.Mutex
	m map[string]*sharedServer
}{m: map[string]*sharedServer{}}

type sharedServer struct {
	srv  *Server
	refs int
}

func acquire(key string, o Options) (*Server, error) {
	shared.Lock()
	defer shared.Unlock()
	if ss := shared.m[key]; ss != nil {
		ss.refs++
		return ss.srv, nil
	}
	srv, err := Start(o)
	if err != nil {
		return nil, err
	}
	shared.m[key] = &sharedServer{srv: srv, refs: 1}
	return srv, nil
}

func release(key string) {
	shared.Lock()
	defer shared.Unlock()
	ss := shared.m[key]
	if ss == nil {
		return
	}
	if ss.refs--; ss.refs == 0 {
		delete(shared.m, key)
		ss.srv.Shutdown()
	}
}

func init() {
	broker.Register("EmbeddedNATS", []string{"nats-embedded"}, func(u *url.URL) (broker.Adapter, error) {
		if u == nil {
			u = &url.URL{Scheme: "nats-embedded"}
		}
		if u.Host != "" {
			return nil, fmt.Errorf("%w: nats-embedded URLs take a store path (nats-embedded:///dir), not a host", broker.ErrInvalidOption)
		}
		return NewShared(Options{StoreDir: u.Path, Listen: u.Query().Get("listen")}), nil
	})
}

// Adapter is a jetstream adapter on the process-wide embedded server of its
// URL: Connect starts the server (or shares the running one), Close
// releases it.
type Adapter struct {
	key  string
	opts Options

	state broker.ConnState
	mu    sync.Mutex
	inner *jetstream.Adapter
}

var (
	_ broker.Adapter     = (*Adapter)(nil)
	_ broker.LagReporter = (*Adapter)(nil)
)

// NewShared returns an adapter on the process-wide server of o (what
// nats-embedded:// URLs resolve to).
func NewShared(o Options) *Adapter {
	return &Adapter{key: fmt.Sprintf("%q %q %d %d", o.StoreDir, o.Listen, o.MaxMemory, o.MaxStore), opts: o}
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
	srv, err := acquire(a.key, a.opts)
	if err != nil {
		return err
	}
	inner, err := srv.Adapter()
	if err == nil {
		err = inner.Connect(ctx, env)
	}
	if err != nil {
		release(a.key)
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
	defer release(a.key)
	return in.Close(ctx)
}
