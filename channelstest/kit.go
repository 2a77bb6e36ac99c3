package channelstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"go-micro.dev/v4/metadata"

	"github.com/microchannels/channels"
)

// The test kit: what a test of an adapter needs besides the broker,
// usable with plain testing as well as inside the Ginkgo suite.

// Service is a schema of one plugin: its name, version and channels, and
// the fields the plugin fills (SendToChannel, EmitLocalChannelHandler).
type Service struct {
	Name                    string
	Version                 string
	Channels                channels.Channels
	SendToChannel           channels.SendFunc
	EmitLocalChannelHandler channels.TriggerFunc
}

// Recorder is a channel handler (Handle) that keeps every message it ran
// to its end, with the call info and go-micro metadata of its context,
// and counts how many of its runs overlap.
type Recorder struct {
	// FailWith is what every run returns (nil: success).
	FailWith error
	// Work is each run's processing time (SimulateWork), spent while the
	// run counts as running. A run cut by its context is not recorded.
	Work time.Duration

	mu      sync.Mutex
	msgs    []*channels.Message
	infos   []*channels.CallInfo
	mds     []metadata.Metadata
	running atomic.Int32
	maxSeen atomic.Int32
}

// Handle is the handler.
func (r *Recorder) Handle(ctx context.Context, m *channels.Message) error {
	n := r.running.Add(1)
	defer r.running.Add(-1)
	for {
		old := r.maxSeen.Load()
		if n <= old || r.maxSeen.CompareAndSwap(old, n) {
			break
		}
	}
	if err := SimulateWork(ctx, r.Work); err != nil {
		return err // cut by a stop's deadline: released, recorded when run again
	}
	ci, _ := channels.FromContext(ctx)
	md, _ := metadata.FromContext(ctx)
	cp := *m
	r.mu.Lock()
	r.msgs, r.infos, r.mds = append(r.msgs, &cp), append(r.infos, ci), append(r.mds, md)
	r.mu.Unlock()
	return r.FailWith
}

// Count is the number of runs recorded.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// All returns the messages recorded, in the order their runs ended.
func (r *Recorder) All() []*channels.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*channels.Message(nil), r.msgs...)
}

// Calls returns the messages with the call info and metadata of each run,
// index by index.
func (r *Recorder) Calls() ([]*channels.Message, []*channels.CallInfo, []metadata.Metadata) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*channels.Message(nil), r.msgs...), append([]*channels.CallInfo(nil), r.infos...),
		append([]metadata.Metadata(nil), r.mds...)
}

// Running is the number of runs in progress.
func (r *Recorder) Running() int { return int(r.running.Load()) }

// MaxRunning is the most runs that were in progress at once.
func (r *Recorder) MaxRunning() int { return int(r.maxSeen.Load()) }

// SimulateWork stands for a handler's own work (not a wait for a
// condition): it takes d, so that handlers overlap as real ones do, and
// ends early with ctx's error when ctx ends first, as a handler that
// honours its context does. A handler that ignores cancellation (the worst
// case a stop deadline meets) passes context.WithoutCancel(ctx).
func SimulateWork(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var unique atomic.Uint64

// Unique makes a name (channel, queue, group) no other test or run uses.
func Unique(base string) string {
	return fmt.Sprintf("%s.%d.%d", base, os.Getpid(), unique.Add(1))
}

// EventuallyTrue fails the test unless cond turns true within timeout; it
// polls every 10 ms.
func EventuallyTrue(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(timeout).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), what)
}

// ConsistentlyTrue fails the test if cond turns false during d.
func ConsistentlyTrue(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Consistently(cond).WithTimeout(d).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), what)
}

// StartPlugin starts a plugin on adapter (anything channels.WithAdapter
// takes) with schema (nil: a sender) and stops it at the end of the test.
func StartPlugin(t testing.TB, adapter any, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	p, err := channels.New(append([]channels.Option{channels.WithAdapter(adapter)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if schema != nil {
		if err := p.Register(schema); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

// Required reports whether a broker that does not answer must fail the
// test instead of skipping it: CHANNELS_E2E_REQUIRE=1, as under `make test`.
func Required() bool { return os.Getenv("CHANNELS_E2E_REQUIRE") == "1" }

// Need skips the test when probe fails (the broker does not answer), or
// fails it when Required.
func Need(t testing.TB, broker string, probe func() error) {
	t.Helper()
	if err := probe(); err != nil {
		if Required() {
			t.Fatalf("%s unreachable with CHANNELS_E2E_REQUIRE=1: %v", broker, err)
		}
		t.Skipf("%s unreachable: %v", broker, err)
	}
}

// SyncBuffer is a bytes.Buffer that a test reads while others write it
// (a logger's output, a command's stdout): every method takes its lock.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
