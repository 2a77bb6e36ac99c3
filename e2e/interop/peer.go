// Package interop drives peer.js, a moleculer service with the real
// @moleculer/channels middleware (pinned in package.json), from Go tests, to
// prove wire compatibility in both directions. `make interop-deps` (part of
// `make test`) installs its node_modules with npm ci.
//
// Scenarios are the interop tests every broker's test package runs; the
// package also holds the small helpers those packages share (Unique,
// Eventually, Consistently, StartPlugin).
package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/e2e/brokerenv"
)

// Record is one JSON line printed by peer.js.
type Record struct {
	Ready   bool              `json:"ready"`
	Sent    *int              `json:"sent"`
	Channel string            `json:"channel"`
	Group   string            `json:"group"`
	Payload json.RawMessage   `json:"payload"`
	Headers map[string]string `json:"headers"`
	Meta    map[string]any    `json:"meta"`
}

// Dir is the directory of peer.js.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Need skips (or fails, when brokers are required) without node and the
// installed node_modules.
func Need(t testing.TB) {
	t.Helper()
	brokerenv.Need(t, "node interop peer", func() error {
		if _, err := exec.LookPath("node"); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(Dir(), "node_modules", "@moleculer", "channels")); err != nil {
			return fmt.Errorf("run `make interop-deps`: %w", err)
		}
		return nil
	})
}

// Consumer is a running `peer.js consume`.
type Consumer struct {
	cmd     *exec.Cmd
	records chan Record
	mu      sync.Mutex
	stderr  strings.Builder
	done    chan error
}

// Consume starts `node peer.js consume args...` and returns once it printed
// {"ready":true}. The process is killed at the end of the test.
func Consume(t testing.TB, args ...string) *Consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Consumer{records: make(chan Record, 1024), done: make(chan error, 1)}
	c.cmd = exec.CommandContext(ctx, "node", append([]string{filepath.Join(Dir(), "peer.js"), "consume"}, args...)...)
	c.cmd.Stderr = writerFunc(func(p []byte) (int, error) { c.mu.Lock(); defer c.mu.Unlock(); return c.stderr.Write(p) })
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			var r Record
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			if r.Ready {
				once.Do(func() { close(ready) })
				continue
			}
			c.records <- r
		}
		c.done <- c.cmd.Wait()
		close(c.records)
	}()
	t.Cleanup(func() { cancel() })
	select {
	case <-ready:
	case err := <-c.done:
		t.Fatalf("peer.js consume exited before it was ready: %v\n%s", err, c.Stderr())
	case <-time.After(60 * time.Second):
		t.Fatalf("peer.js consume not ready after 60s\n%s", c.Stderr())
	}
	return c
}

// Stderr returns what the peer logged.
func (c *Consumer) Stderr() string { c.mu.Lock(); defer c.mu.Unlock(); return c.stderr.String() }

// Wait collects n records, failing the test after timeout.
func (c *Consumer) Wait(t testing.TB, n int, timeout time.Duration) []Record {
	t.Helper()
	var out []Record
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case r, ok := <-c.records:
			if !ok {
				t.Fatalf("peer.js consume ended after %d of %d records\n%s", len(out), n, c.Stderr())
			}
			out = append(out, r)
		case <-deadline:
			t.Fatalf("peer.js consume got %d of %d records within %s\n%s", len(out), n, timeout, c.Stderr())
		}
	}
	return out
}

// Send runs `node peer.js send args...` and returns what it sent.
func Send(t testing.TB, args ...string) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(Dir(), "peer.js"), "send"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("peer.js send %v: %v\n%s", args, err, stderr.String())
	}
	var recs []Record
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r Record
		if json.Unmarshal([]byte(line), &r) == nil && r.Sent != nil {
			recs = append(recs, r)
		}
	}
	return recs
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
