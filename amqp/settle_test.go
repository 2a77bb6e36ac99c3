package amqp

import (
	"context"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

// TestReleaseBoundedByDrain: a Release outside a drain is bounded by its
// caller's context only (the kit gives it DefaultSettleTimeout: a
// hand-back copy to a quorum queue waits for a Raft commit); during a
// drain, by the end of the drain's hand-backs, even when it starts late
// (one running past it would publish its copy after the channel closed,
// while the close requeues the original: a duplicate).
func TestReleaseBoundedByDrain(t *testing.T) {
	s := &subscription{Consumer: kit.NewConsumer(&broker.Channel{Name: "c", Group: "g", MaxInFlight: 1})}
	parent, cancel := context.WithTimeout(context.Background(), kit.DefaultSettleTimeout)
	defer cancel()
	pdl, _ := parent.Deadline()
	now := time.Now()
	ctx, c1 := s.releaseContext(parent)
	defer c1()
	if dl, ok := ctx.Deadline(); !ok || !dl.Equal(pdl) {
		t.Fatalf("outside a drain: deadline %v, want the caller's %v", dl, pdl)
	}
	drainDL := now.Add(2 * time.Second)
	if !handBacksDeadline(drainDL).Before(kit.FinishBy(drainDL)) {
		t.Fatal("the hand-backs may outlast the kit's wait for Finish: the channel would close under them")
	}
	s.handBacksBy.Store(handBacksDeadline(drainDL).UnixNano())
	if err := s.Consumer.Drain(context.Background(), kit.DrainHooks{}); err != nil {
		t.Fatal(err)
	}
	ctx, c2 := s.releaseContext(parent)
	defer c2()
	want := kit.FinishBy(drainDL).Add(-closeMargin)
	if dl, _ := ctx.Deadline(); !dl.Equal(time.Unix(0, want.UnixNano())) {
		t.Fatalf("during a drain: deadline %v, want %v", dl, want)
	}
	s.handBacksBy.Store(time.Now().Add(-time.Millisecond).UnixNano()) // a Release that starts after it
	ctx, c3 := s.releaseContext(parent)
	defer c3()
	if ctx.Err() == nil {
		dl, _ := ctx.Deadline()
		t.Fatalf("past the drain's hand-backs: deadline %v, want it over", dl)
	}
}
