package embedded_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/jetstream/embedded"
)

// A store of an earlier release (<data dir>/channels-nats/<executable>)
// left beside the default store is reported at Connect: its messages are
// not delivered from the new default store.
func TestLegacyStoreDirWarned(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	legacy := filepath.Join(data, "channels-nats", strings.TrimSuffix(filepath.Base(exe), ".exe"))
	if err := os.MkdirAll(filepath.Join(legacy, "jetstream"), 0o700); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	a := embedded.NewShared(embedded.Options{})
	ctx := context.Background()
	if err := a.Connect(ctx, broker.Env{Logger: logger}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Close(ctx) }()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "legacy_store="+legacy) {
		t.Fatalf("no warning naming the legacy store %s; logs:\n%s", legacy, logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
