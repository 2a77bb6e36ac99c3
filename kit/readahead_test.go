package kit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// gatedChannel is a channel whose handler records the order messages start
// in and the most that ran at once, and returns when the message's gate is
// closed (or its context ends).
type gatedChannel struct {
	mu      sync.Mutex
	started []string
	running int
	most    int
	gates   map[string]chan struct{}
}

func newGated(mif int, ids ...string) (*gatedChannel, *broker.Channel) {
	g := &gatedChannel{gates: map[string]chan struct{}{}}
	for _, id := range ids {
		g.gates[id] = make(chan struct{})
	}
	ch := &broker.Channel{Name: "c", Group: "g", MaxInFlight: mif, Handler: func(ctx context.Context, m *broker.Message) error {
		g.mu.Lock()
		g.started = append(g.started, m.ID)
		g.running++
		g.most = max(g.most, g.running)
		gate := g.gates[m.ID]
		g.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done():
		}
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
		return nil
	}}
	ch.Normalize()
	return g, ch
}

func (g *gatedChannel) startedIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.started...)
}

func delivery(id string, s kit.Settler) *kit.Delivery {
	m := broker.NewMessage(nil)
	m.ID, m.Attempt = id, 1
	return &kit.Delivery{Msg: m, Settle: s}
}

// eventually polls cond until it holds (gomega's Eventually, 5 s).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(5*time.Second).WithPolling(time.Millisecond).Should(gomega.BeTrue(), what)
}

func TestReadAheadRunsInOrderWithinTheBound(t *testing.T) {
	g, ch := newGated(2, "1", "2", "3", "4", "5")
	c := kit.NewConsumer(ch)
	c.Start()
	if n, ok := c.AwaitFetch(); !ok || n != 2 {
		t.Fatalf("AwaitFetch = %d, %v; want 2 (nothing held)", n, ok)
	}
	for _, id := range []string{"1", "2", "3", "4"} {
		c.Hold(delivery(id, &settled{}))
	}
	eventually(t, "1 and 2 to run", func() bool { return len(g.startedIDs()) == 2 })
	// 3 and 4 are held: MaxInFlight of them, so the fetch loop must wait.
	fetch := make(chan int, 1)
	go func() { n, _ := c.AwaitFetch(); fetch <- n }()
	gomega.NewWithT(t).Consistently(fetch).WithTimeout(50*time.Millisecond).
		ShouldNot(gomega.Receive(), "AwaitFetch allowed more with MaxInFlight messages held")
	close(g.gates["2"])
	eventually(t, "3 to run on the freed slot", func() bool { return len(g.startedIDs()) == 3 })
	select {
	case n := <-fetch:
		if n != 1 {
			t.Fatalf("AwaitFetch = %d with one message held, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AwaitFetch did not return once a held message started")
	}
	c.Hold(delivery("5", &settled{}))
	for _, id := range []string{"1", "3", "4", "5"} {
		close(g.gates[id])
	}
	eventually(t, "every message to run", func() bool { return len(g.startedIDs()) == 5 })
	if got := g.startedIDs(); got[2] != "3" || got[3] != "4" || got[4] != "5" {
		t.Fatalf("held messages started in order %v, want 3, 4, 5 after 1 and 2", got)
	}
	if g.most > 2 {
		t.Fatalf("%d handlers ran at once with MaxInFlight 2", g.most)
	}
	if err := c.Drain(context.Background(), kit.DrainHooks{}); err != nil {
		t.Fatal(err)
	}
}

func TestReadAheadIsHandedBackAtTheDrain(t *testing.T) {
	g, ch := newGated(1, "1")
	c := kit.NewConsumer(ch)
	c.Start()
	s1, s2, s3 := &settled{}, &settled{}, &settled{}
	c.Hold(delivery("1", s1))
	c.Hold(delivery("2", s2))
	c.Hold(delivery("3", s3))
	eventually(t, "1 to run", func() bool { return len(g.startedIDs()) == 1 })
	drained := make(chan error, 1)
	go func() { drained <- c.Drain(context.Background(), kit.DrainHooks{}) }()
	// Held messages go back at once, while the running handler finishes.
	eventually(t, "the held messages to be released", func() bool { return s2.got() == "release" && s3.got() == "release" })
	close(g.gates["1"])
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if got := g.startedIDs(); len(got) != 1 || s1.got() != "ack" {
		t.Fatalf("ran %v, first message settled %q; want only 1 run, and acked", got, s1.got())
	}
	late := &settled{}
	c.Hold(delivery("4", late))
	if late.got() != "release" {
		t.Fatalf("a message held after the drain was %q, want released", late.got())
	}
}

func TestReleasedSlotRunsTheHeldMessage(t *testing.T) {
	g, ch := newGated(1, "1")
	close(g.gates["1"])
	c := kit.NewConsumer(ch)
	c.Start()
	if !c.TryAcquire() { // taken by a redelivery that then finds nothing to run
		t.Fatal("no slot")
	}
	s := &settled{}
	c.Hold(delivery("1", s))
	if len(g.startedIDs()) != 0 {
		t.Fatal("a held message ran without a slot")
	}
	c.ReleaseSlot()
	eventually(t, "the held message to run and be acked", func() bool { return s.got() == "ack" })
	if err := c.Drain(context.Background(), kit.DrainHooks{}); err != nil {
		t.Fatal(err)
	}
}

func TestReadAheadWaitsForWantedRedeliveries(t *testing.T) {
	_, ch := newGated(1)
	c := kit.NewConsumer(ch)
	c.Start()
	c.WantSlots()
	fetch := make(chan bool, 1)
	go func() { _, ok := c.AwaitFetch(); fetch <- ok }()
	gomega.NewWithT(t).Consistently(fetch).WithTimeout(50*time.Millisecond).
		ShouldNot(gomega.Receive(), "a read went ahead while a redelivery waited for a slot")
	c.SlotsGranted()
	select {
	case ok := <-fetch:
		if !ok {
			t.Fatal("AwaitFetch refused")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AwaitFetch did not resume after SlotsGranted")
	}
	c.WantSlots()
	go func() { _, ok := c.AwaitFetch(); fetch <- ok }()
	if err := c.Drain(context.Background(), kit.DrainHooks{}); err != nil {
		t.Fatal(err)
	}
	if <-fetch {
		t.Fatal("AwaitFetch allowed a read during the drain")
	}
}

// blockedRelease is a settler whose broker does not answer a release: it
// returns only when its ctx ends.
type blockedRelease struct{ settled }

func (b *blockedRelease) Release(ctx context.Context) error {
	b.add("release")
	<-ctx.Done()
	return ctx.Err()
}

func TestReadAheadHandBackKeepsToTheDrainDeadline(t *testing.T) {
	g, ch := newGated(1, "1")
	c := kit.NewConsumer(ch)
	c.Start()
	c.Hold(delivery("1", &settled{}))
	for _, id := range []string{"2", "3", "4"} {
		c.Hold(delivery(id, &blockedRelease{}))
	}
	eventually(t, "1 to run", func() bool { return len(g.startedIDs()) == 1 })
	close(g.gates["1"])
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = c.Drain(ctx, kit.DrainHooks{})
	// Each hand-back may take ReleaseTimeout on its own; the drain's
	// deadline bounds them all.
	if took := time.Since(start); took > kit.ReleaseTimeout {
		t.Fatalf("Drain took %s with a 100 ms context: the hand-backs ignored it", took)
	}
}
