package kit_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

type ctxKey struct{}

// waitClosed polls until ch is closed or a second passed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatalf("%s: not done a second after the handler returned", what)
	}
}

func deliverWith(t *testing.T, parent context.Context, h broker.Handler) broker.Outcome {
	t.Helper()
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: h}
	ch.Normalize()
	msg := broker.NewMessage(nil)
	msg.Channel, msg.Group, msg.ID, msg.Attempt = "c", "g", "1-0", 1
	return kit.Deliver(parent, ch, &kit.Delivery{Msg: msg, Settle: &settled{}})
}

func TestHandlerContextEndsWhenTheHandlerReturns(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")
	var runCtx context.Context
	done := make(chan struct{})
	derived := make(chan struct{})
	out := deliverWith(t, parent, func(ctx context.Context, _ *broker.Message) error {
		if ctx.Err() != nil {
			t.Errorf("Err %v while the handler runs", ctx.Err())
		}
		if ctx.Value(ctxKey{}) != "v" {
			t.Error("the parent's values are lost")
		}
		runCtx = ctx
		go func() { <-ctx.Done(); close(done) }()
		d, cancel := context.WithCancel(ctx)
		go func() { defer cancel(); <-d.Done(); close(derived) }()
		return nil
	})
	if out.Action != broker.Ack {
		t.Fatalf("outcome %v", out.Action)
	}
	waitClosed(t, done, "the handler's context")
	waitClosed(t, derived, "a context derived from it")
	if !errors.Is(runCtx.Err(), context.Canceled) {
		t.Fatalf("Err after the run: %v", runCtx.Err())
	}
	// Done asked for the first time after the run: closed already.
	late := deliverWith(t, parent, func(ctx context.Context, _ *broker.Message) error { runCtx = ctx; return nil })
	_ = late
	waitClosed(t, runCtx.Done(), "Done asked after the run")
}

func TestHandlerContextEndsWithItsParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	go func() { <-started; cancel() }()
	out := deliverWith(t, parent, func(ctx context.Context, _ *broker.Message) error {
		close(started)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
			return errors.New("the parent's cancellation never reached the handler")
		}
	})
	if out.Action != broker.Release {
		t.Fatalf("a run cut by its parent: outcome %v, want release", out.Action)
	}
}

// TestDerivedContextsNeedNoGoroutine: contexts derived from a handler's
// context follow it through its AfterFunc, not through a goroutine each,
// and end with the run.
func TestDerivedContextsNeedNoGoroutine(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	const n = 50
	var derived []context.Context
	var grew int
	deliverWith(t, parent, func(ctx context.Context, _ *broker.Message) error {
		before := runtime.NumGoroutine()
		for range n {
			d, cancel := context.WithCancel(ctx)
			t.Cleanup(cancel)
			derived = append(derived, d)
		}
		grew = runtime.NumGoroutine() - before
		return nil
	})
	if grew >= n/2 {
		t.Fatalf("%d derived contexts started %d goroutines", n, grew)
	}
	for i, d := range derived {
		waitClosed(t, d.Done(), fmt.Sprintf("derived context %d", i))
	}
	// Stopping a registration before the run ends keeps its func from running.
	ran := make(chan struct{}, 1)
	deliverWith(t, parent, func(ctx context.Context, _ *broker.Message) error {
		stop := context.AfterFunc(ctx, func() { ran <- struct{}{} })
		if !stop() {
			t.Error("stop before the end reported false")
		}
		return nil
	})
	select {
	case <-ran:
		t.Fatal("a stopped AfterFunc ran")
	default:
	}
}
