package embedded_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	js "github.com/nats-io/nats.go/jetstream"
	"github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream"
	"github.com/microchannels/channels/jetstream/embedded"
)

// TestMain keeps the default stores of this package's tests (and of the
// example) out of the user's data directory; with CHANNELS_EMBEDDED_CHILD
// set, the binary is a child process of a restart test instead.
func TestMain(m *testing.M) {
	if role := os.Getenv("CHANNELS_EMBEDDED_CHILD"); role != "" {
		os.Exit(child(role))
	}
	if os.Getenv("XDG_DATA_HOME") == "" || !strings.Contains(os.Getenv("XDG_DATA_HOME"), "channels-embedded-test") {
		d, err := os.MkdirTemp("", "channels-embedded-test-")
		if err != nil {
			panic(err)
		}
		os.Setenv("XDG_DATA_HOME", d)
		code := m.Run()
		os.RemoveAll(d)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(timeout).WithPolling(20*time.Millisecond).Should(gomega.BeTrue(), what)
}

type svc struct {
	Name     string
	Channels channels.Channels
}

const restartChannel = "restart.orders"

// child runs one step of a restart test on nats-embedded:// (the default
// store of this executable): "send N" creates the group and sends N
// messages nobody handles, then stops normally; "send-crash N" does the
// same and is killed before it stops; "receive" counts what the group
// gets and prints it.
func child(role string) int {
	ctx := context.Background()
	p, err := channels.New(channels.WithAdapter("nats-embedded://"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	got := map[string]bool{}
	want, _ := strconv.Atoi(os.Getenv("CHANNELS_EMBEDDED_WANT"))
	enough := make(chan struct{}) // closed when want messages came
	if want <= 0 {
		close(enough)
	}
	block := make(chan struct{})
	_ = p.Register(&svc{Name: "restart", Channels: channels.Channels{restartChannel: {Group: "g", MaxInFlight: 4,
		// A crashed member's messages come back after AckWait.
		AdapterOptions: []any{jetstream.ChannelOptions{AckWait: 2 * time.Second, FetchTimeout: time.Second}},
		Handler: func(ctx context.Context, m *channels.Message) error {
			if role != "receive" {
				select { // the sender's members never finish a message
				case <-block:
				case <-ctx.Done():
				}
				return ctx.Err()
			}
			mu.Lock()
			got[string(m.Payload)] = true
			if len(got) == want {
				close(enough)
			}
			mu.Unlock()
			return nil
		}}}})
	if err := p.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fields := strings.Fields(role)
	switch fields[0] {
	case "send", "send-crash":
		n, _ := strconv.Atoi(fields[1])
		for i := range n {
			if err := p.SendToChannel(ctx, restartChannel, i); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
		fmt.Println("sent")
		if fields[0] == "send-crash" {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	case "receive":
		select { // every message, or what came within the deadline
		case <-enough:
		case <-time.After(20 * time.Second):
		}
		mu.Lock()
		fmt.Println("received", len(got))
		mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	}
	return 0
}

func runChild(t *testing.T, data, role string, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"CHANNELS_EMBEDDED_CHILD=" + role, "XDG_DATA_HOME=" + data}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if role == "send-crash 25" {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("child %q: %v (want a kill)\n%s", role, err, errb.String())
		}
	} else if err != nil {
		t.Fatalf("child %q: %v\n%s", role, err, errb.String())
	}
	return out.String()
}

// A process on the default URL nats-embedded:// with messages pending
// (sent, never finished) stops normally, or is killed; the next process
// of the same executable finds every one of them.
func TestDefaultStoreKeptAcrossRestarts(t *testing.T) {
	for _, role := range []string{"send 25", "send-crash 25"} {
		t.Run(strings.Fields(role)[0], func(t *testing.T) {
			data := t.TempDir()
			if out := runChild(t, data, role); !strings.Contains(out, "sent") {
				t.Fatalf("sender: %q", out)
			}
			start := time.Now()
			out := runChild(t, data, "receive", "CHANNELS_EMBEDDED_WANT=25")
			t.Logf("%s; next start: %s in %s", role, strings.TrimSpace(out), time.Since(start))
			if !strings.Contains(out, "received 25") {
				t.Fatalf("after %q the next process got %q, want all 25", role, out)
			}
		})
	}
}

// The default store is a stable directory per executable; a second server
// on it in the same process (or another process) is refused while the
// first one holds it.
func TestDefaultStoreDirLocked(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	dir := embedded.DefaultStoreDir()
	if dir != embedded.DefaultStoreDir() || !strings.HasPrefix(dir, os.Getenv("XDG_DATA_HOME")) {
		t.Fatalf("default store %q", dir)
	}
	s, err := embedded.Start(embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if s.StoreDir() != dir {
		t.Fatalf("store %q, want %q", s.StoreDir(), dir)
	}
	if _, err := embedded.Start(embedded.Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on the same store: %v", err)
	}
}

// A port in use is reported at once with the listener's error; port 0
// picks a free port (nats-server takes 0 for 4222).
func TestListenErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = embedded.Start(embedded.Options{Temporary: true, Listen: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Since(start) > time.Second {
		t.Fatalf("busy port: %v after %s", err, time.Since(start))
	}
	s, err := embedded.Start(embedded.Options{Temporary: true, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if u := s.ClientURL(); strings.HasSuffix(u, ":4222") || strings.HasSuffix(u, ":0") {
		t.Fatalf("listen=127.0.0.1:0 bound %s", u)
	}
}

// A listen address other than loopback is refused unless the server
// requires TLS and authentication.
func TestListenNonLoopbackNeedsTLSAndAuth(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		if _, err := embedded.Start(embedded.Options{Temporary: true, Listen: addr}); !errors.Is(err, broker.ErrInvalidOption) {
			t.Fatalf("listen %s: %v, want ErrInvalidOption", addr, err)
		}
	}
	authOnly := func(o *server.Options) { o.Username, o.Password = "u", "p" }
	if _, err := embedded.Start(embedded.Options{Temporary: true, Listen: "0.0.0.0:0", Configure: authOnly}); !errors.Is(err, broker.ErrInvalidOption) {
		t.Fatalf("auth without TLS: %v", err)
	}
	cfg := selfSigned(t)
	s, err := embedded.Start(embedded.Options{Temporary: true, Listen: "0.0.0.0:0", Configure: func(o *server.Options) {
		authOnly(o)
		o.TLSConfig, o.TLS = cfg, true
	}})
	if err != nil {
		t.Fatalf("TLS and auth: %v", err)
	}
	s.Shutdown()
	a, err := channels.New(channels.WithAdapter("nats-embedded://?store=temporary&listen=0.0.0.0:0"))
	if err == nil {
		err = a.Start(context.Background())
	}
	if !errors.Is(err, channels.ErrInvalidOption) {
		t.Fatalf("URL listen on every interface: %v", err)
	}
}

func selfSigned(t *testing.T) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

// With an encryption key the store holds no message in clear; the same key
// reads it again after a restart.
func TestEncryptionAtRest(t *testing.T) {
	const marker = "secret-marker-7f3a9c"
	store := func(t *testing.T, key string) string {
		dir := t.TempDir()
		o := embedded.Options{StoreDir: dir, EncryptionKey: key}
		s, err := embedded.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := s.Connect()
		if err != nil {
			t.Fatal(err)
		}
		j, _ := js.New(nc)
		ctx := context.Background()
		if _, err := j.CreateStream(ctx, js.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := j.Publish(ctx, "s", []byte(marker)); err != nil {
			t.Fatal(err)
		}
		nc.Close()
		s.Shutdown()
		if key != "" {
			s, err := embedded.Start(o)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown()
			nc, _ := s.Connect()
			defer nc.Close()
			j, _ := js.New(nc)
			st, err := j.Stream(ctx, "S")
			if err != nil {
				t.Fatal(err)
			}
			m, err := st.GetMsg(ctx, 1)
			if err != nil || string(m.Data) != marker {
				t.Fatalf("read back with the key: %v %v", m, err)
			}
		}
		return dir
	}
	inClear := func(dir string) bool {
		found := false
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(marker)) {
					found = true
				}
			}
			return nil
		})
		return found
	}
	if !inClear(store(t, "")) {
		t.Fatal("without a key the marker is not found in the store: the check proves nothing")
	}
	if inClear(store(t, "a-long-enough-secret-key-for-the-store")) {
		t.Fatal("with a key the message is stored in clear")
	}
}

// A temporary store left behind by a killed process is removed by the next
// temporary start.
func TestTemporaryStoreRemovedAfterCrash(t *testing.T) {
	s, err := embedded.Start(embedded.Options{Temporary: true})
	if err != nil {
		t.Fatal(err)
	}
	live := s.StoreDir()
	defer s.Shutdown()
	// What a killed process leaves: a temporary store whose lock nobody holds.
	dead, err := os.MkdirTemp("", "channels-nats-")
	if err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dead, "channels-embedded.lock")
	if err := os.WriteFile(lock, []byte("999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	_ = os.Chtimes(lock, old, old)
	s2, err := embedded.Start(embedded.Options{Temporary: true})
	if err != nil {
		t.Fatal(err)
	}
	s2.Shutdown()
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("abandoned temporary store %s still there: %v", dead, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("the live temporary store was removed: %v", err)
	}
	if _, err := os.Stat(s2.StoreDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary store not removed at shutdown: %v", err)
	}
}

// The shutdown of a shared server is bounded by the Close's context.
func TestShutdownContextBounded(t *testing.T) {
	s, err := embedded.Start(embedded.Options{Temporary: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	start := time.Now()
	err = s.ShutdownContext(ctx)
	if took := time.Since(start); took > 100*time.Millisecond || (err != nil && !errors.Is(err, broker.ErrAbandoned)) {
		t.Fatalf("ShutdownContext with a context ended a second ago: %v after %s", err, took)
	}
	eventually(t, 10*time.Second, "store removed in the background", func() bool {
		_, err := os.Stat(s.StoreDir())
		return errors.Is(err, fs.ErrNotExist)
	})
}

// The adapter of nats-embedded:// URLs offers what the jetstream adapter
// offers: size limits (a send with 100 KiB of headers is refused before
// the server), batches, and RemoveChannel.
func TestSharedAdapterDelegates(t *testing.T) {
	ctx := context.Background()
	p, err := channels.New(channels.WithAdapter("nats-embedded://?store=temporary"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop(ctx)
	err = p.SendToChannel(ctx, "deleg.topic", 1, channels.WithHeader("big", strings.Repeat("h", 100<<10)))
	if !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("send with 100 KiB of headers: %v, want ErrTooLarge", err)
	}
	if err := p.SendBatch(ctx, "deleg.topic", channels.BatchOf(1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	rm, ok := p.Adapter().(channels.ChannelRemover)
	if !ok {
		t.Fatal("the nats-embedded adapter is not a ChannelRemover")
	}
	if err := rm.RemoveChannel(ctx, "deleg.topic"); err != nil {
		t.Fatal(err)
	}
}

// A Close whose context has already ended returns at once (the shutdown of
// the shared server goes on in the background), and the next Connect on
// the same store waits for that shutdown instead of failing on the store's
// lock.
func TestCloseThenConnectSameStore(t *testing.T) {
	o := embedded.Options{StoreDir: t.TempDir()}
	a := embedded.NewShared(o)
	if err := a.Connect(context.Background(), broker.Env{}); err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := a.Close(ended)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("Close with an ended context took %s", took)
	}
	t.Logf("Close with an ended context: %v", err)
	b := embedded.NewShared(o)
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := b.Connect(ctx, broker.Env{}); err != nil {
		t.Fatalf("connect after the shutdown: %v", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
