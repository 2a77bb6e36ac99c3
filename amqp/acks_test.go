package amqp

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
)

type ackCall struct {
	tag      uint64
	multiple bool
	nack     bool
}

type fakeAcks struct {
	mu    sync.Mutex
	calls []ackCall
}

func (f *fakeAcks) Ack(tag uint64, multiple bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ackCall{tag: tag, multiple: multiple})
	return nil
}

func (f *fakeAcks) Nack(tag uint64, multiple, requeue bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ackCall{tag: tag, multiple: multiple, nack: true})
	return nil
}

// TestAckerFlush drives flush directly (no batcher timing), with no acks
// held: a settled run from the lowest outstanding tag is one multiple ack;
// tags beyond a gap are acked one by one and skipped when the gap closes;
// nacked tags close gaps without an ack.
func TestAckerFlush(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}}
	for tag := uint64(1); tag <= 8; tag++ {
		k.delivered(tag)
	}
	k.flush([]uint64{2, 1, 3})        // run 1..3
	k.flush([]uint64{6, 5})           // gap at 4: one by one
	if err := k.nack(4); err != nil { // 4 handed back: closes the gap
		t.Fatal(err)
	}
	k.flush([]uint64{7})                  // run 4..7, 5 and 6 already acked: multiple up to 7
	if got := k.outstanding(); got != 1 { // 8 is still running
		t.Fatalf("outstanding = %d, want 1", got)
	}
	want := []ackCall{{tag: 3, multiple: true}, {tag: 5}, {tag: 6}, {tag: 4, nack: true}, {tag: 7, multiple: true}}
	if !reflect.DeepEqual(f.calls, want) {
		t.Fatalf("calls %+v\nwant  %+v", f.calls, want)
	}
}

func TestAckerBatcher(t *testing.T) {
	f := &fakeAcks{}
	k := newAcker(f, 16, 0, 0)
	for tag := uint64(1); tag <= 100; tag++ {
		k.delivered(tag)
		if err := k.ack(tag); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k.outstanding() != 0 || k.low != 101 {
		t.Fatalf("outstanding %d low %d", k.outstanding(), k.low)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.calls[len(f.calls)-1]
	if last.tag != 100 || !last.multiple || len(f.calls) > 100 {
		t.Fatalf("calls %+v", f.calls)
	}
}

// expect fails t unless the calls so far are want.
func (f *fakeAcks) expect(t *testing.T, want ...ackCall) {
	t.Helper()
	if got := f.recorded(); !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %+v\nwant  %+v", got, want)
	}
}

func (f *fakeAcks) recorded() []ackCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ackCall(nil), f.calls...)
}

// TestAckerHoldsBeyondGap: with hold 2, the acks of tags beyond a gap wait
// for it to close and then go out in its multiple ack; a third one beyond
// the gap sends the held ones one by one.
func TestAckerHoldsBeyondGap(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}, hold: 2, holdFor: time.Hour}
	defer stopHoldTimer(k)
	for tag := uint64(1); tag <= 8; tag++ {
		k.delivered(tag)
	}
	k.flush([]uint64{3, 2}) // gap at 1: both held
	if got := f.recorded(); len(got) != 0 {
		t.Fatalf("acks sent while the gap is open: %+v", got)
	}
	k.flush([]uint64{1})                  // the gap closes: one multiple ack for 1..3
	k.flush([]uint64{5, 6})               // gap at 4: held
	k.flush([]uint64{7})                  // a third beyond the gap: all three one by one
	if got := k.outstanding(); got != 2 { // 4 and 8 are still running
		t.Fatalf("outstanding = %d, want 2", got)
	}
	want := []ackCall{{tag: 3, multiple: true}, {tag: 5}, {tag: 6}, {tag: 7}}
	f.expect(t, want...)
}

// TestAckerHoldTime: an ack held beyond a gap goes out on its own once it
// waited holdFor, with no other ack to flush it.
func TestAckerHoldTime(t *testing.T) {
	g := gomega.NewWithT(t)
	f, k := startAcker(t, 4, 0, 20*time.Millisecond, 3)
	if err := k.ack(2); err != nil {
		t.Fatal(err)
	}
	g.Eventually(f.recorded, 5*time.Second, 5*time.Millisecond).Should(gomega.Equal([]ackCall{{tag: 2}}))
	if err := k.ack(1); err != nil {
		t.Fatal(err)
	}
	g.Eventually(f.recorded, 5*time.Second, 5*time.Millisecond).Should(gomega.Equal([]ackCall{{tag: 2}, {tag: 1, multiple: true}}))
}

// TestAckerCloseSendsHeld: close sends the acks still held beyond a gap.
func TestAckerCloseSendsHeld(t *testing.T) {
	f := &fakeAcks{}
	k := newAcker(f, 16, 4, 0)
	k.holdFor = time.Hour
	for tag := uint64(1); tag <= 3; tag++ {
		k.delivered(tag)
	}
	if err := k.ack(3); err != nil {
		t.Fatal(err)
	}
	if err := k.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.expect(t, ackCall{tag: 3})
}

// TestAckerLongGapStaysBounded: behind a message that runs for long, the
// acks of 20,000 later tags go out one by one, each once and in order, and
// the list of held tags never grows past hold plus one flush (the work of
// a flush does not grow with the tags settled above the gap).
func TestAckerLongGapStaysBounded(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}, hold: 4, holdFor: time.Hour}
	defer stopHoldTimer(k)
	const n, batch = 20_000, 16
	for tag := uint64(1); tag <= n; tag++ {
		k.delivered(tag)
	}
	for from := uint64(2); from <= n; from += batch {
		var tags []uint64
		for tag := from; tag < from+batch && tag <= n; tag++ {
			tags = append(tags, tag)
		}
		k.flush(tags)
		if len(k.held) > k.hold+batch {
			t.Fatalf("%d tags held after flushing up to %d", len(k.held), tags[len(tags)-1])
		}
	}
	k.flush([]uint64{1}) // the gap closes: the ack of 1 waits to join a multiple ack
	k.closing = true
	k.flush(nil)
	got := f.recorded()
	var next uint64 = 2
	for _, c := range got[:len(got)-1] {
		if c.multiple || c.nack || c.tag != next {
			t.Fatalf("ack %+v, want single ack of %d", c, next)
		}
		next++
	}
	if next != n+1 || got[len(got)-1] != (ackCall{tag: 1, multiple: true}) {
		t.Fatalf("acked up to %d, last %+v", next-1, got[len(got)-1])
	}
	if k.outstanding() != 0 || len(k.done) != 0 {
		t.Fatalf("outstanding %d, %d settled tags kept", k.outstanding(), len(k.done))
	}
}

// TestAckerSecondAckIgnored: a tag acked twice is acked once (RabbitMQ
// closes the channel on the ack of an unknown delivery tag).
func TestAckerSecondAckIgnored(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}}
	for tag := uint64(1); tag <= 3; tag++ {
		k.delivered(tag)
	}
	k.flush([]uint64{3}) // gap at 1: sent on its own
	k.flush([]uint64{3})
	k.flush([]uint64{1, 2})
	want := []ackCall{{tag: 3}, {tag: 2, multiple: true}}
	f.expect(t, want...)
}

// TestAckerNackClosingGapSendsHeld: a hand-back that closes the gap sends
// the acks held behind it at once, not when their hold time ends.
func TestAckerNackClosingGapSendsHeld(t *testing.T) {
	g := gomega.NewWithT(t)
	f, k := startAcker(t, 4, 0, time.Hour, 3)
	if err := k.ack(2); err != nil {
		t.Fatal(err)
	}
	g.Consistently(f.recorded, 50*time.Millisecond, 5*time.Millisecond).Should(gomega.BeEmpty())
	if err := k.nack(1); err != nil {
		t.Fatal(err)
	}
	g.Eventually(f.recorded, 5*time.Second, 5*time.Millisecond).Should(gomega.Equal([]ackCall{{tag: 1, nack: true}, {tag: 2, multiple: true}}))
}

// TestAckerHoldsRun: with hold 4, the acks of a settled run wait to join
// one multiple ack until a fifth is settled, and with hold 0 each goes out
// at once.
func TestAckerHoldsRun(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}, hold: 4, holdFor: time.Hour}
	defer stopHoldTimer(k)
	for tag := uint64(1); tag <= 9; tag++ {
		k.delivered(tag)
	}
	k.flush([]uint64{1})
	k.flush([]uint64{2})
	k.flush([]uint64{4, 3})
	if got := f.recorded(); len(got) != 0 {
		t.Fatalf("acks sent with 4 held: %+v", got)
	}
	k.flush([]uint64{5})    // a fifth: one multiple ack for 1..5
	k.flush([]uint64{7, 6}) // held again
	if err := k.nack(8); err != nil {
		t.Fatal(err)
	}
	k.flush([]uint64{wake}) // the nacked 8 joins the run; 6 and 7 still held
	want := []ackCall{{tag: 5, multiple: true}, {tag: 8, nack: true}}
	f.expect(t, want...)
	k.closing = true
	k.flush(nil)
	want = append(want, ackCall{tag: 7, multiple: true})
	f.expect(t, want...)

	f0 := &fakeAcks{}
	k0 := &acker{ch: f0, low: 1, done: map[uint64]bool{}, holdFor: time.Hour}
	k0.delivered(1)
	k0.delivered(2)
	k0.flush([]uint64{1})
	k0.flush([]uint64{2})
	f0.expect(t, ackCall{tag: 1, multiple: true}, ackCall{tag: 2, multiple: true})
}

// TestAckerRunHoldTime: a lone ack waits AckHoldTime for others to join
// it, then goes out on its own with no other ack to flush it.
func TestAckerRunHoldTime(t *testing.T) {
	g := gomega.NewWithT(t)
	f, k := startAcker(t, 4, 0, 100*time.Millisecond, 1)
	if err := k.ack(1); err != nil {
		t.Fatal(err)
	}
	// It cannot go out before holdFor: a slow machine only delays it.
	g.Consistently(f.recorded, 40*time.Millisecond, 5*time.Millisecond).Should(gomega.BeEmpty())
	g.Eventually(f.recorded, 5*time.Second, 5*time.Millisecond).Should(gomega.Equal([]ackCall{{tag: 1, multiple: true}}))
}

// TestAckerCredit: acks wait only while the messages not settled plus the
// acks waiting leave part of the prefetch credit unused; once they fill
// it, everything waiting goes out (RabbitMQ would otherwise stop
// delivering to the free handlers).
func TestAckerCredit(t *testing.T) {
	g := gomega.NewWithT(t)
	f, k := startAcker(t, 4, 6, time.Hour, 5)
	if err := k.ack(1); err != nil {
		t.Fatal(err)
	}
	if err := k.ack(3); err != nil {
		t.Fatal(err)
	}
	// 3 running + 2 waiting = 5 of 6: held.
	g.Consistently(f.recorded, 50*time.Millisecond, 5*time.Millisecond).Should(gomega.BeEmpty())
	k.delivered(6) // 4 running + 2 waiting: the delivery fills the credit
	g.Eventually(f.recorded, 5*time.Second, 5*time.Millisecond).Should(gomega.Equal([]ackCall{{tag: 1, multiple: true}, {tag: 3}}))
}

// TestAckerRunAndHeldApart: over the budget, the run's multiple ack goes
// out and the acks beyond the gap stay held (they may still join the next
// multiple ack); an ackNow sends the run at once.
func TestAckerRunAndHeldApart(t *testing.T) {
	f := &fakeAcks{}
	k := &acker{ch: f, low: 1, done: map[uint64]bool{}, hold: 4, holdFor: time.Hour}
	defer stopHoldTimer(k)
	for tag := uint64(1); tag <= 12; tag++ {
		k.delivered(tag)
	}
	k.flush([]uint64{1, 2, 3}) // the run 1..3 waits
	k.flush([]uint64{5, 6})    // 5 waiting: the run goes, 5 and 6 wait for 4
	want := []ackCall{{tag: 3, multiple: true}}
	f.expect(t, want...)
	k.flush([]uint64{4})          // 4..6 join in one run, waiting
	k.flush([]uint64{7 | urgent}) // as ackNow(7) queues it: the run goes now
	k.flush([]uint64{9 | urgent}) // beyond the gap at 8: on its own, now
	k.flush([]uint64{10})         // beyond the gap: waits
	want = append(want, ackCall{tag: 7, multiple: true}, ackCall{tag: 9})
	f.expect(t, want...)
	k.flush([]uint64{8}) // the gap closes: 8 and 10 wait in the run (9 went)
	k.closing = true
	k.flush(nil)
	want = append(want, ackCall{tag: 10, multiple: true})
	f.expect(t, want...)
}

// TestAckerAckNow: the ack of a message whose copy is confirmed goes out
// at once, with the run waiting before it.
func TestAckerAckNow(t *testing.T) {
	g := gomega.NewWithT(t)
	f, k := startAcker(t, 4, 0, time.Hour, 2)
	if err := k.ack(1); err != nil {
		t.Fatal(err)
	}
	if err := k.ackNow(2); err != nil {
		t.Fatal(err)
	}
	g.Eventually(f.recorded, 5*time.Second, 5*time.Millisecond).Should(gomega.Equal([]ackCall{{tag: 2, multiple: true}}))
}

// startAcker starts an acker of hold and credit whose acks wait holdFor,
// with tags 1..delivered delivered; it is closed when t ends.
func startAcker(t *testing.T, hold, credit int, holdFor time.Duration, delivered uint64) (*fakeAcks, *acker) {
	f := &fakeAcks{}
	k := newAcker(f, 16, hold, credit)
	k.holdFor = holdFor // before the first ack: the batcher's queue orders it
	t.Cleanup(func() { _ = k.close(context.Background()) })
	for tag := uint64(1); tag <= delivered; tag++ {
		k.delivered(tag)
	}
	return f, k
}

// stopHoldTimer stops the hold timer of an acker driven by flush directly.
func stopHoldTimer(k *acker) {
	if k.timer != nil {
		k.timer.Stop()
	}
}
