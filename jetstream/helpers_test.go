package jetstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/jetstream"
)

// startServer runs a private nats-server with JetStream on a free loopback
// port, its store in the test's temporary directory, and returns its URL.
func startServer(t testing.TB, edit ...func(*server.Options)) (string, *server.Server) {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true}
	for _, e := range edit {
		e(o)
	}
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.ClientURL(), srv
}

// jsOn opens a plain JetStream context on url, closed at the end of the test.
func jsOn(t testing.TB, url string) (*nats.Conn, js.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	j, err := js.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, j
}

// fast shortens AckWait and the pull expiry so that tests see redeliveries
// within their deadlines.
var fast = jetstream.ChannelOptions{AckWait: 2 * time.Second, FetchTimeout: time.Second}

// service is the schema of a test service.
type service = channelstest.Service

// startPlugin starts a plugin on adapter with schema (nil: a sender) and
// stops it at the end of the test.
var startPlugin = channelstest.StartPlugin

func newAdapter(t testing.TB, url string, o jetstream.ChannelOptions, opts ...jetstream.Option) *jetstream.Adapter {
	t.Helper()
	a, err := jetstream.New(url, append([]jetstream.Option{jetstream.WithChannelOptions(o)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var (
	eventually   = channelstest.EventuallyTrue
	consistently = channelstest.ConsistentlyTrue
)

// streamMsgs is the number of messages stored by a stream (-1: no stream).
func streamMsgs(j js.JetStream, name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := j.Stream(ctx, name)
	if err != nil {
		return -1
	}
	return int(st.CachedInfo().State.Msgs)
}

// counter counts handler calls.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// logSink records log lines (for assertions on errors logged by the kit).
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		l.mu.Lock()
		l.lines = append(l.lines, string(p))
		l.mu.Unlock()
		return len(p), nil
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logSink) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var errBoom = errors.New("boom")

// rawPublish publishes on the NATS protocol itself (HPUB), as a third-party
// client may, with a header block nats.go would refuse to write; headers
// are "Name: value" lines without the trailing CRLF.
func rawPublish(t testing.TB, url, subject string, headers []string, payload []byte) {
	t.Helper()
	hdr := "NATS/1.0\r\n"
	for _, h := range headers {
		hdr += h + "\r\n"
	}
	rawPublishBlock(t, url, subject, hdr+"\r\n", payload)
}

// rawPublishBlock publishes with the header block hdr as it is (HPUB).
func rawPublishBlock(t testing.TB, url, subject, hdr string, payload []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := fmt.Sprintf("CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"protocol\":1}\r\nHPUB %s %d %d\r\n%s%s\r\nPING\r\n",
		subject, len(hdr), len(hdr)+len(payload), hdr, payload)
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("raw publish: %v", err)
		}
		if strings.HasPrefix(line, "-ERR") {
			t.Fatalf("raw publish: %s", line)
		}
		if strings.HasPrefix(line, "PONG") {
			return
		}
	}
}
