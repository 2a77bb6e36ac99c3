// Package embedded runs a NATS server with JetStream inside the process
// (github.com/nats-io/nats-server/v2), so that channels work with no broker
// to install: the default of `make demo` and examples/quickstart. It lives
// in its own package so that only programs importing it link the server.
//
// Importing it registers the URL scheme nats-embedded:
//
//	nats-embedded://                        in-process only, store in DefaultStoreDir (kept across restarts)
//	nats-embedded:///var/lib/app/nats       store kept in that directory
//	nats-embedded://?store=temporary        store in a temporary directory removed at the end (demos, tests)
//	nats-embedded://?listen=127.0.0.1:4222  also accept TCP clients (other processes, the nats CLI)
//
// The store is where JetStream keeps the messages not yet consumed, the
// pending retries and the failure records: by default it lives in a
// directory of its own per application (DefaultStoreDir), so a stop, a
// crash or a restart loses nothing; a second process of the same
// application is refused while the first one holds the store (a lock
// file). A listen address other than a loopback one is refused unless
// the server requires authentication and TLS (Options.Configure).
//
// Every adapter resolved from the same URL in one process shares one server
// (as the members of a group share a broker); it starts with the first
// Connect and shuts down with the last Close. For a server of your own, use
// Start and Server.Adapter.
package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/microchannels/channels/kit"

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
	// DefaultShutdownTimeout bounds the shutdown of a shared server when
	// the Close that releases it has no deadline.
	DefaultShutdownTimeout = 10 * time.Second
)

// Cipher is the encryption of the store at rest.
type Cipher string

// Ciphers of nats-server's JetStream store encryption.
const (
	ChaCha Cipher = "chacha" // ChaCha20-Poly1305 (the default with a key)
	AES    Cipher = "aes"    // AES-GCM
)

// Options configure an embedded server.
type Options struct {
	// StoreDir keeps the JetStream store; empty: DefaultStoreDir() (kept
	// across stops and crashes), unless Temporary is set.
	StoreDir string
	// Temporary keeps the store in a new temporary directory removed by
	// Shutdown: what is not consumed by then is lost. A temporary store
	// left behind by a crash is removed by the next temporary start.
	Temporary bool
	// Listen is a host:port to accept TCP clients on (port 0 or -1 picks a
	// free port); empty: in-process connections only. A host other than a
	// loopback address (127.0.0.1, ::1, localhost) is refused unless
	// Configure sets up both TLS and authentication.
	Listen string
	// MaxMemory and MaxStore bound JetStream (defaults DefaultMaxMemory,
	// DefaultMaxStore).
	MaxMemory, MaxStore int64
	// EncryptionKey, when set, encrypts the store at rest with it
	// (nats-server's JetStream store encryption, Cipher ChaCha unless set).
	// The same key is needed to read the store again; a store written
	// without a key is encrypted at the first start with one.
	EncryptionKey string
	Cipher        Cipher
	// Configure, when set, edits the server options last (authentication,
	// TLS, limits, logging, ...).
	Configure func(*server.Options)
}

// DefaultStoreDir is the store of an application's embedded server when
// Options.StoreDir is empty: <data dir>/channels-nats/<application>, with
// the data dir $XDG_DATA_HOME, else ~/.local/share (macOS:
// ~/Library/Application Support; Windows: %LocalAppData%), else the
// temporary directory.
//
// The application is named by its main package's import path (from the
// build information, e.g. example.com/shop/cmd/orders, written
// example.com_shop_cmd_orders-<hash>): the same for every build and run of
// that program, `go run` included, and different for two programs whose
// executables share a name (every `go run` executable is named main).
// A program run from files (`go run main.go`, whose package has no import
// path) is named by the executable's name and the working directory
// instead. Set Options.StoreDir (or nats-embedded:///dir) to choose the
// directory yourself, as production deployments should.
func DefaultStoreDir() string {
	exe, _ := os.Executable()
	wd, _ := os.Getwd()
	path := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		path = bi.Path
	}
	return filepath.Join(dataDir(), "channels-nats", appName(path, exe, wd))
}

// legacyStoreDir is the default store of releases that named it by the
// executable's name alone (<data dir>/channels-nats/<executable>), when
// that directory exists and is not today's default store.
func legacyStoreDir() (string, bool) {
	exe, err := os.Executable()
	if err != nil {
		return "", false
	}
	dir := filepath.Join(dataDir(), "channels-nats", strings.TrimSuffix(filepath.Base(exe), ".exe"))
	if dir == DefaultStoreDir() {
		return "", false
	}
	if fi, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil || !fi.IsDir() {
		return "", false
	}
	return dir, true
}

// appName names the store of a program: its main package path when it has
// one, else its executable's name and the working directory; a readable
// part and a hash of what names it.
func appName(mainPath, exe, wd string) string {
	id := mainPath
	readable := mainPath
	if mainPath == "" || mainPath == "command-line-arguments" {
		readable = strings.TrimSuffix(filepath.Base(exe), ".exe")
		if readable == "" || readable == "." {
			readable = "app"
		}
		id = readable + "\x00" + wd
	}
	readable = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' {
			return r
		}
		return '_'
	}, readable)
	if len(readable) > 64 {
		readable = readable[len(readable)-64:]
	}
	sum := sha256.Sum256([]byte(id))
	return readable + "-" + hex.EncodeToString(sum[:4])
}

func dataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return d
	}
	switch runtime.GOOS {
	case "darwin", "windows", "ios":
		if d, err := os.UserConfigDir(); err == nil && runtime.GOOS != "windows" {
			return d
		}
		if d, err := os.UserCacheDir(); err == nil { // Windows: %LocalAppData%
			return d
		}
	default:
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, ".local", "share")
		}
	}
	return os.TempDir()
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	srv    *server.Server
	dir    string
	tmp    bool
	lock   *dirLock
	listen bool
}

// tempPrefix names the temporary stores (found again after a crash).
const tempPrefix = "channels-nats-"

// Start runs a server and waits until it accepts connections.
func Start(o Options) (*Server, error) {
	s := &Server{}
	dir := o.StoreDir
	switch {
	case dir == "" && o.Temporary:
		removeAbandonedTemps()
		tmp, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return nil, fmt.Errorf("channels/jetstream/embedded: store dir: %w", err)
		}
		dir, s.tmp = tmp, true
	case dir == "":
		dir = DefaultStoreDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("channels/jetstream/embedded: store dir: %w", err)
	}
	s.dir = dir
	lock, err := lockDir(dir)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("channels/jetstream/embedded: store %s: %w", dir, err)
	}
	s.lock = lock
	so := &server.Options{JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true, ServerName: "channels-embedded",
		JetStreamMaxMemory: o.MaxMemory, JetStreamMaxStore: o.MaxStore}
	if so.JetStreamMaxMemory == 0 {
		so.JetStreamMaxMemory = DefaultMaxMemory
	}
	if so.JetStreamMaxStore == 0 {
		so.JetStreamMaxStore = DefaultMaxStore
	}
	if o.EncryptionKey != "" {
		so.JetStreamKey, so.JetStreamCipher = o.EncryptionKey, server.ChaCha
		switch o.Cipher {
		case "", ChaCha:
		case AES:
			so.JetStreamCipher = server.AES
		default:
			s.cleanup()
			return nil, fmt.Errorf("%w: embedded cipher %q (chacha or aes)", broker.ErrInvalidOption, o.Cipher)
		}
	}
	if o.Listen == "" {
		so.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			s.cleanup()
			return nil, fmt.Errorf("%w: embedded listen address %q: %w", broker.ErrInvalidOption, o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < -1 || p > 65535 {
			s.cleanup()
			return nil, fmt.Errorf("%w: embedded listen port %q", broker.ErrInvalidOption, port)
		}
		if p == 0 {
			p = server.RANDOM_PORT // nats-server takes 0 for its default port, 4222
		}
		so.Host, so.Port = host, p
		s.listen = true
	}
	if o.Configure != nil {
		o.Configure(so)
	}
	if s.listen {
		if err := checkListen(so); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	onDisk := storedStreams(dir, o.EncryptionKey != "")
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
	if err := s.checkRecovered(onDisk); err != nil {
		s.Shutdown()
		return nil, err
	}
	return s, nil
}

// ErrStoreUnreadable is returned by Start when streams of the store could
// not be read back: the store was written with another encryption key (or
// with one, and none is given), or its files are damaged. The store is
// left as it is.
var ErrStoreUnreadable = errors.New("channels/jetstream/embedded: the store holds streams the server could not read (another encryption key?)")

// storedStreams counts the streams a store holds on disk
// (jetstream/<account>/streams/<stream>) as the server recovers them: a
// directory whose name does not start with a dot (a stream being deleted)
// and that holds the stream's meta.inf, and its meta.key when the store
// is read with a key.
func storedStreams(dir string, encrypted bool) int {
	ds, _ := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", "*"))
	n := 0
	for _, d := range ds {
		if strings.HasPrefix(filepath.Base(d), ".") {
			continue
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		if !isFile(filepath.Join(d, "meta.inf")) || encrypted && !isFile(filepath.Join(d, "meta.key")) {
			continue
		}
		n++
	}
	return n
}

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// checkRecovered compares the streams the server runs with those its
// store held at the start.
func (s *Server) checkRecovered(onDisk int) error {
	if onDisk == 0 {
		return nil
	}
	jsz, err := s.srv.Jsz(&server.JSzOptions{})
	if err != nil {
		return fmt.Errorf("channels/jetstream/embedded: reading the recovered streams: %w", err)
	}
	if jsz.Streams < onDisk {
		return fmt.Errorf("%w: %s holds %d streams, %d were recovered", ErrStoreUnreadable, s.dir, onDisk, jsz.Streams)
	}
	return nil
}

// checkListen refuses a listen address other than loopback on a server
// without TLS and authentication, and reports a port already in use at
// once (nats-server would only log it, and never become ready).
func checkListen(so *server.Options) error {
	if !loopback(so.Host) && (so.TLSConfig == nil || !hasAuth(so)) {
		return fmt.Errorf("%w: embedded listen address %q is not a loopback address: anyone who reaches it could read, publish and delete streams; "+
			"set up TLS and authentication (Options.Configure) or listen on 127.0.0.1", broker.ErrInvalidOption, net.JoinHostPort(so.Host, strconv.Itoa(so.Port)))
	}
	if so.Port <= 0 {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(so.Host, strconv.Itoa(so.Port)))
	if err != nil {
		return fmt.Errorf("channels/jetstream/embedded: listen: %w", err)
	}
	return ln.Close()
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func hasAuth(so *server.Options) bool {
	return so.Username != "" || so.Authorization != "" || len(so.Users) > 0 || len(so.Nkeys) > 0 ||
		so.CustomClientAuthentication != nil || len(so.TrustedOperators) > 0 || len(so.TrustedKeys) > 0 ||
		so.AuthCallout != nil || (so.TLSVerify && so.TLSMap)
}

// StoreDir is the directory of the server's store.
func (s *Server) StoreDir() string { return s.dir }

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

// Shutdown stops the server, releases its store and removes a temporary
// one.
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	s.cleanup()
}

// ShutdownContext is Shutdown bounded by ctx: when ctx ends first, the
// shutdown goes on in the background and the error wraps
// broker.ErrAbandoned.
func (s *Server) ShutdownContext(ctx context.Context) error {
	return kit.Bounded(ctx, "shutdown of the embedded NATS server", func() error { s.Shutdown(); return nil })
}

func (s *Server) cleanup() {
	if s.lock != nil {
		s.lock.release()
		s.lock = nil
	}
	if s.tmp {
		_ = os.RemoveAll(s.dir)
		s.tmp = false
	}
}

// removeAbandonedTemps removes the temporary stores of processes that
// ended without removing theirs (a crash): those whose lock nobody holds.
func removeAbandonedTemps() {
	if !canLock {
		return
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, lockFile)); err != nil || time.Since(fi.ModTime()) < 10*time.Second {
			continue // not ours, or just being created (not locked yet)
		}
		l, err := lockDir(d)
		if err != nil {
			continue // in use
		}
		_ = os.RemoveAll(d)
		l.release()
	}
}
