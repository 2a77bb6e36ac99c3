package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
	return ch.Deliver(parent, &broker.Delivery{Msg: msg, Settle: &settled{}})
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
