package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/microchannels/channels/broker"
)

func TestBoundedReturnsByTheDeadline(t *testing.T) {
	boom := errors.New("boom")
	if err := broker.Bounded(context.Background(), "quick", func() error { return boom }); err != boom {
		t.Fatalf("quick step: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	err := broker.Bounded(ctx, "a close on a frozen link", func() error { <-release; return nil })
	took := time.Since(start)
	var ae *broker.AbandonedError
	if !errors.As(err, &ae) || !errors.Is(err, broker.ErrAbandoned) || !errors.Is(err, context.DeadlineExceeded) ||
		ae.What != "a close on a frozen link" {
		t.Fatalf("hung step: %v", err)
	}
	if took > 100*time.Millisecond+broker.BoundedGrace+100*time.Millisecond {
		t.Fatalf("returned after %v", took)
	}

	// A step that watches ctx returns its own error at the deadline.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	own := errors.New("drain timed out, 2 handlers running")
	if err := broker.Bounded(ctx2, "drain", func() error { <-ctx2.Done(); return own }); err != own {
		t.Fatalf("ctx-aware step: %v", err)
	}

	// An ended context: the step still runs, nobody waits for it.
	ran := make(chan struct{})
	if err := broker.Bounded(ctx2, "late", func() error { close(ran); return nil }); !errors.Is(err, broker.ErrAbandoned) {
		t.Fatalf("ended ctx: %v", err)
	}
	select {
	case <-ran:
	case <-time.After(time.Second):
		t.Fatal("the step never ran")
	}
}
