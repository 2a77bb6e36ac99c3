package redis

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
)

// flushed records the acks the flusher sent.
type flushed struct {
	mu  sync.Mutex
	ids []string
}

func (f *flushed) xack(items []ackItem, _ <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range items {
		f.ids = append(f.ids, it.id)
	}
}

func (f *flushed) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(5*time.Second).WithPolling(time.Millisecond).Should(gomega.BeTrue(), what)
}

func TestAckerCarriesAcksWithReadsWhileMessagesFlow(t *testing.T) {
	f := &flushed{}
	a := newAcker(16, f.xack)
	a.Start()
	a.carryWithReads()
	a.window = time.Hour // no read counts as blocked until said so below

	// Between two reads: the ack waits for the next one.
	if err := a.Add(ackItem{id: "1"}); err != nil {
		t.Fatal(err)
	}
	if got := a.take(); len(got) != 1 || got[0].id != "1" {
		t.Fatalf("the next read carried %v, want [1]", got)
	}
	// The read just started (the message that ends it is on its way): it
	// waits for the read after.
	if err := a.Add(ackItem{id: "2"}); err != nil {
		t.Fatal(err)
	}
	a.readEnded()
	if got := a.take(); len(got) != 1 || got[0].id != "2" {
		t.Fatalf("the read after carried %v, want [2]", got)
	}
	if got := f.got(); len(got) != 0 {
		t.Fatalf("the flusher sent %v: carried acks need no round trip of their own", got)
	}

	// The read has been blocked longer than the carry window: nothing
	// flows, so the ack is sent at once.
	a.mu.Lock()
	a.window = time.Millisecond
	a.mu.Unlock()
	waitFor(t, "the read to block past the carry window", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return time.Since(a.reading) > a.window
	})
	if err := a.Add(ackItem{id: "3"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flusher to send 3", func() bool { return len(f.got()) == 1 })
	a.readEnded()

	// Left for a read that does not come: sent after ackCarryWait.
	if err := a.Add(ackItem{id: "4"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flusher to send 4", func() bool { return len(f.got()) == 2 })

	// Close sends what waits and refuses the rest.
	if err := a.Add(ackItem{id: "5"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.got(); len(got) != 3 || got[2] != "5" {
		t.Fatalf("flushed %v, want 3, 4 and 5", got)
	}
	if a.Add(ackItem{id: "6"}) == nil {
		t.Fatal("Add after Close must fail")
	}
}

func TestAckerOnACallersClientSendsAtOnce(t *testing.T) {
	f := &flushed{}
	a := newAcker(16, f.xack)
	a.Start()
	if err := a.Add(ackItem{id: "1"}); err != nil {
		t.Fatal(err)
	}
	if got := a.take(); len(got) != 0 {
		t.Fatalf("a read carried %v without carryWithReads", got)
	}
	waitFor(t, "the flusher to send 1", func() bool { return len(f.got()) == 1 })
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestAckerGivenBackAfterCloseStillSends: acks the fetch loop's last read
// could not carry, given back after the drain closed the flusher, are sent
// all the same (they belong to handlers that succeeded).
func TestAckerGivenBackAfterCloseStillSends(t *testing.T) {
	f := &flushed{}
	a := newAcker(16, f.xack)
	a.Start()
	a.carryWithReads()
	if err := a.Add(ackItem{id: "1"}); err != nil {
		t.Fatal(err)
	}
	carried := a.take()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.giveBack(carried) // the read's pipeline failed
	if got := f.got(); len(got) != 1 || got[0] != "1" {
		t.Fatalf("sent %v, want [1]", got)
	}
}

// TestAckKeepsTheEntryHeldUntilRedisAnswers: an acknowledged entry stays
// held (heartbeated, skipped by claims) while its XACK fails for the
// connection, and the XACK is retried past ackRetries while the
// subscription runs; once it stops, the tries end and the entry is let go
// (delivered again).
func TestAckKeepsTheEntryHeldUntilRedisAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	c := goredis.NewClient(&goredis.Options{Addr: dead, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	ch := &broker.Channel{Name: "c", Group: "g"}
	s := &subscription{c: c, ch: ch, log: slog.New(slog.DiscardHandler), held: newHoldings()}
	s.recs = records{c: c, stream: ch.Name, group: ch.Group}
	tries := make(chan struct{}, 64)
	s.acks = newAcker(16, func(items []ackItem, stopping <-chan struct{}) {
		tries <- struct{}{}
		s.xack(items, stopping)
	})
	s.acks.Start()
	s.held.add("1-0")
	d := &delivery{s: s, id: "1-0"}
	if err := d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flusher to try", func() bool { return len(tries) == 1 })
	// 5 tries take about 1.5 s (backoff 100 ms doubling): past them, the
	// entry is still held and the XACK still tried.
	gomega.NewWithT(t).Consistently(func() bool { return s.held.has("1-0") }).
		WithTimeout(2500*time.Millisecond).WithPolling(10*time.Millisecond).Should(gomega.BeTrue(), "held while the XACK fails")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.acks.Close(ctx) // the stop: the tries end
	if s.held.has("1-0") {
		t.Fatal("still held after the stop gave up the XACK")
	}
}
