package redis

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels"
)

// repoRoot is the repository root (for scripts/services.sh).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func services(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "services.sh"), args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("services.sh %v: %v\n%s", args, err, out)
	}
}

// TestFaultRedisRestart stops and restarts the Redis server under a running
// consumer: sends fail with an error while it is down (no hang, no silent
// drop), and consuming resumes by itself once it is back, with nothing lost.
// It runs only with CHANNELS_FAULT_TESTS=1 (make test runs it on its own,
// after the other tests, since it takes Redis away from everyone).
func TestFaultRedisRestart(t *testing.T) {
	if os.Getenv("CHANNELS_FAULT_TESTS") != "1" {
		t.Skip("fault test: set CHANNELS_FAULT_TESTS=1 (make test does, in a serial step)")
	}
	needRedis(t)
	if _, err := os.Stat(filepath.Join(repoRoot(), ".services", "redis", "redis.pid")); err != nil {
		t.Fatalf("Redis was not started by scripts/services.sh, so this test cannot stop it: %v", err)
	}
	t.Cleanup(func() { services(t, "up", "redis") })

	ch := unique("fault.topic")
	var got atomic.Int32
	startPlugin(t, crashTimings, &service{Name: "fault", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *channels.Message) error {
		got.Add(1)
		return nil
	})}})
	sender := startPlugin(t, crashTimings, nil)
	ctx := context.Background()
	if err := sender.SendToChannel(ctx, ch, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "first message", func() bool { return got.Load() == 1 })

	services(t, "down", "redis")
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

	services(t, "up", "redis")
	// Both plugins reconnect by themselves.
	eventually(t, 20*time.Second, "send after restart", func() bool { return sender.SendToChannel(ctx, ch, 3) == nil })
	eventually(t, 20*time.Second, "consuming resumed", func() bool { return got.Load() >= 2 })
	consistently(t, time.Second, "no duplicates", func() bool { return got.Load() == 2 })
}
