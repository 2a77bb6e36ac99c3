package interop

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels"
)

// Unique makes a name (channel, queue, group) no other test or run uses.
func Unique(base string) string {
	return fmt.Sprintf("%s.%d.%d", base, os.Getpid(), time.Now().UnixNano())
}

// Eventually fails the test unless cond turns true within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(timeout).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), what)
}

// Consistently fails the test if cond turns false during d.
func Consistently(t testing.TB, d time.Duration, what string, cond func() bool) {
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
