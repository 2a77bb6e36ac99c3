package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// privateRedis is a redis-server of the test's own, on a free loopback
// port, so the test can stop and restart it without disturbing the shared
// brokers.
type privateRedis struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	brokerenv.Need(t, "redis-server binary", func() error { _, err := exec.LookPath("redis-server"); return err })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &privateRedis{t: t, port: port, dir: t.TempDir()}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *privateRedis) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *privateRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", fmt.Sprint(r.port), "--dir", r.dir,
		"--appendonly", "yes", "--save", "", "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.port)})
	defer c.Close()
	eventually(r.t, 10*time.Second, "private redis up", func() bool { return c.Ping(context.Background()).Err() == nil })
}

// stop shuts the server down gracefully (SIGTERM: the AOF is flushed).
func (r *privateRedis) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// TestFaultRedisRestart stops and restarts Redis under a running consumer:
// sends fail with an error while it is down (no hang, no silent drop), both
// plugins reconnect by themselves, consuming resumes, and nothing is lost or
// duplicated.
func TestFaultRedisRestart(t *testing.T) {
	r := startPrivateRedis(t)
	newPlugin := func(schema any) *channels.Plugin { return startPluginAt(t, r.url(), crashTimings, schema) }
	ch := unique("fault.topic")
	var got atomic.Int32
	newPlugin(&service{Name: "fault", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *channels.Message) error {
		got.Add(1)
		return nil
	})}})
	sender := newPlugin(nil)
	ctx := context.Background()
	if err := sender.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first message", func() bool { return got.Load() == 1 })

	r.stop()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	start := time.Now()
	err := sender.SendToChannel(sctx, ch, 2)
	cancel()
	if !errors.Is(err, channels.ErrPublish) {
		t.Fatalf("send while Redis is down: %v, want ErrPublish", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("send while Redis is down took %s", took)
	}

	r.start()
	eventually(t, 20*time.Second, "send after restart", func() bool { return sender.SendToChannel(ctx, ch, 3) == nil })
	eventually(t, 20*time.Second, "consuming resumed", func() bool { return got.Load() >= 2 })
	consistently(t, time.Second, "no duplicates", func() bool { return got.Load() == 2 })
}
