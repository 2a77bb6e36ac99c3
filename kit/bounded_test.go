package kit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

func TestBoundedReturnsByTheDeadline(t *testing.T) {
	boom := errors.New("boom")
	if err := kit.Bounded(context.Background(), "quick", func() error { return boom }); err != boom {
		t.Fatalf("quick step: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	err := kit.Bounded(ctx, "a close on a frozen link", func() error { <-release; return nil })
	took := time.Since(start)
	var ae *broker.AbandonedError
	if !errors.As(err, &ae) || !errors.Is(err, broker.ErrAbandoned) || !errors.Is(err, context.DeadlineExceeded) ||
		ae.What != "a close on a frozen link" {
		t.Fatalf("hung step: %v", err)
	}
	if took > 100*time.Millisecond+kit.BoundedGrace+100*time.Millisecond {
		t.Fatalf("returned after %v", took)
	}

	// A step that watches ctx returns its own error at the deadline.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	own := errors.New("drain timed out, 2 handlers running")
	if err := kit.Bounded(ctx2, "drain", func() error { <-ctx2.Done(); return own }); err != own {
		t.Fatalf("ctx-aware step: %v", err)
	}

	// An ended context: a quick step still gets its result through; a
	// hanging one is abandoned at once, and its Done tells when it ended.
	if err := kit.Bounded(ctx2, "late", func() error { return boom }); err != boom {
		t.Fatalf("ended ctx, quick step: %v", err)
	}
	unblock := make(chan struct{})
	start = time.Now()
	err = kit.Bounded(ctx2, "late and stuck", func() error { <-unblock; return nil })
	if !errors.As(err, &ae) || time.Since(start) > kit.BoundedGrace+100*time.Millisecond {
		t.Fatalf("ended ctx, stuck step: %v after %v", err, time.Since(start))
	}
	close(unblock)
	select {
	case <-ae.Done:
	case <-time.After(time.Second):
		t.Fatal("Done never closed")
	}
}
