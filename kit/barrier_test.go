package kit_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// TestDrainWaitsForASlotTakenBeforeIt: a fetcher that took a slot just
// before the drain began, and has not started its message yet, is waited
// for like a running handler: the drain does not return (and Finish does not
// run) before that message is done.
func TestDrainWaitsForASlotTakenBeforeIt(t *testing.T) {
	var ran atomic.Int32
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error {
		ran.Add(1)
		return nil
	}}
	ch.Normalize()
	c := kit.NewConsumer(ch)
	c.Start()
	if !c.AcquireForFetch(context.Background()) {
		t.Fatal("no slot")
	}
	drained := make(chan int32, 1)
	go func() {
		_ = c.Drain(context.Background(), kit.DrainHooks{Finish: func(context.Context, bool) error {
			drained <- ran.Load()
			return nil
		}})
	}()
	eventually(t, "the drain to start", c.IsStopping)
	gomega.NewWithT(t).Consistently(drained).WithTimeout(50*time.Millisecond).WithPolling(time.Millisecond).
		ShouldNot(gomega.Receive(), "the drain finished with a slot taken")
	s := &settled{}
	c.Run(delivery("1", s), nil)
	select {
	case n := <-drained:
		if n != 1 {
			t.Fatalf("Finish ran after %d runs, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drain did not end after the message")
	}
}

// TestAcquireForFetchEndsWithItsContext: a fetcher waiting for a slot stops
// waiting when its own context ends (a Kafka partition handed over), and
// takes no slot.
func TestAcquireForFetchEndsWithItsContext(t *testing.T) {
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error { return nil }}
	ch.Normalize()
	c := kit.NewConsumer(ch)
	if !c.TryAcquire() {
		t.Fatal("no slot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan bool, 1)
	go func() { got <- c.AcquireForFetch(ctx) }()
	cancel()
	select {
	case ok := <-got:
		if ok {
			t.Fatal("a slot was taken past the fetcher's end")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AcquireForFetch did not return when its context ended")
	}
	c.ReleaseSlot()
	if c.Free() != 1 {
		t.Fatalf("%d free slots, want 1", c.Free())
	}
}

// TestStartRacingDrain: a Start (or Go) racing a drain neither races with
// the drain's wait nor outlives it: every loop started is waited for.
func TestStartRacingDrain(t *testing.T) {
	for range 200 {
		ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: 1, Handler: func(context.Context, *broker.Message) error { return nil }}
		ch.Normalize()
		c := kit.NewConsumer(ch)
		var ran atomic.Int32
		started := make(chan struct{})
		go func() {
			defer close(started)
			c.Start(func() { ran.Add(1); <-c.Stopping() })
			c.Go(func() { ran.Add(1) })
		}()
		if err := c.Drain(context.Background(), kit.DrainHooks{}); err != nil {
			t.Fatal(err)
		}
		<-started
	}
}
