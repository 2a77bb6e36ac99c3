package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/offsetcommit"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/microchannels/channels/broker"
)

// commitRecorder is a transport answering offset commits: it records the
// metadata of each commit once answered; block, when set, holds the
// commits until it is closed.
// overlapped records a commit entered while another one was under way.
type commitRecorder struct {
	mu         sync.Mutex
	metas      []string
	entered    chan struct{}
	block      chan struct{}
	active     int
	overlapped bool
}

func (f *commitRecorder) RoundTrip(ctx context.Context, _ net.Addr, m protocol.Message) (protocol.Message, error) {
	req, ok := m.(*offsetcommit.Request)
	if !ok {
		return nil, errors.New("unexpected request")
	}
	f.mu.Lock()
	f.active++
	f.overlapped = f.overlapped || f.active > 1
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active--
		f.mu.Unlock()
	}()
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	res := &offsetcommit.Response{}
	for _, t := range req.Topics {
		rt := offsetcommit.ResponseTopic{Name: t.Name}
		for _, p := range t.Partitions {
			f.mu.Lock()
			f.metas = append(f.metas, p.CommittedMetadata)
			f.mu.Unlock()
			rt.Partitions = append(rt.Partitions, offsetcommit.ResponsePartition{PartitionIndex: p.PartitionIndex})
		}
		res.Topics = append(res.Topics, rt)
	}
	return res, nil
}

func (f *commitRecorder) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.metas...)
}

// committingPartition is a testPartition whose commits go to rec.
func committingPartition(t *testing.T, rec *commitRecorder) *partition {
	t.Helper()
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error { return nil })
	p.s.c = &conn{client: &kafkago.Client{Addr: kafkago.TCP("127.0.0.1:1"), Transport: rec}}
	p.g.kg = &kafkago.Generation{ID: 1, MemberID: "m"}
	return p
}

// eventually fails the test unless cond holds within d (polled).
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(d).WithPolling(5*time.Millisecond).Should(gomega.BeTrue(), what)
}

// consistently fails the test if cond turns false during d (polled).
func consistently(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	gomega.NewWithT(t).Consistently(cond).WithTimeout(d).WithPolling(5*time.Millisecond).Should(gomega.BeTrue(), what)
}

// A clean hand-over commit keeps the run count a careful partition came in
// with while that message has not run: the crash count is not erased.
func TestCleanHandOverKeepsAPendingRunCount(t *testing.T) {
	rec := &commitRecorder{}
	p := committingPartition(t, rec)
	p.pos = 5
	p.beCareful(2, 5)
	p.g.commit([]*partition{p}, (*partition).cleanMeta, true)
	if got := rec.recorded(); len(got) != 1 || got[0] != "run:2" {
		t.Fatalf("committed %q, want the pending run count run:2", got)
	}
}

// A run count is never overtaken by a commit of the position made at the
// same time with other metadata: the count is the last commit.
func TestRunCountIsNotOvertakenByACommit(t *testing.T) {
	rec := &commitRecorder{entered: make(chan struct{}, 1), block: make(chan struct{})}
	p := committingPartition(t, rec)
	p.beCareful(0, 0)
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		p.g.commit([]*partition{p}, func(*partition) string { return metaLive }, true)
	}()
	<-rec.entered // the live commit is under way
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		p.countRun(p.delivery(record(0, "", nil), nil))
	}()
	// The count waits for the commit under way: no second commit is sent
	// while that one is held.
	consistently(t, time.Second, "no commit sent while another is under way", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return !rec.overlapped
	})
	close(rec.block)
	<-committed
	<-counted
	if got := rec.recorded(); len(got) != 2 || got[1] != "run:1" {
		t.Fatalf("commits %q, want live then run:1", got)
	}
	if rec.overlapped {
		t.Fatal("the count was sent while the live commit was under way")
	}
}

// waitIdle reports idle when nothing runs, even with no time to wait, and
// busy while a message runs or a retry copy of one is being written.
func TestWaitIdleReports(t *testing.T) {
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error { return nil })
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if !p.waitIdle(done) {
		t.Fatal("nothing runs: reported busy")
	}
	p.mu.Lock()
	p.running = 1
	p.mu.Unlock()
	if p.waitIdle(done) {
		t.Fatal("a message runs: reported idle")
	}
	p.mu.Lock()
	p.running, p.writing = 0, 1
	p.mu.Unlock()
	if p.waitIdle(done) {
		t.Fatal("a retry copy is being written: reported idle")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		p.mu.Lock()
		p.writing--
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	if !p.waitIdle(ctx) {
		t.Fatal("the copy written: reported busy")
	}
}

// The bytes of the messages queued in lanes are given back when the
// partition is handed over: rebalance after rebalance, the subscription's
// read-ahead budget is not used up and its partitions go on reading.
func TestLaneQueuedBytesAreReleasedAtTheHandOver(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	first := testPartition(t, PerKey, 8, func(context.Context, *broker.Message) error { <-release; return nil })
	s := first.s
	s.readAhead = 64 << 10
	big := func(off int64) kafkago.Message {
		m := record(off, "k", nil)
		m.Value = make([]byte, 16<<10)
		return m
	}
	ctx := context.Background()
	for round := range 5 {
		g := &generation{s: s, parts: map[int]*partition{}, handedOver: make(chan struct{})}
		p := newPartition(g, 0, 0)
		g.parts[0] = p
		p.mu.Lock()
		gated := p.mustWait()
		p.mu.Unlock()
		if gated {
			t.Fatalf("rebalance %d: a new partition may not read (%d bytes held)", round, s.heldBytes.Load())
		}
		p.dispatch(ctx, big(0)) // takes the slot and holds the lane of k
		p.dispatch(ctx, big(1)) // queued behind it
		p.dispatch(ctx, big(2))
		if held := s.heldBytes.Load(); held <= 0 {
			t.Fatalf("rebalance %d: %d bytes held with two messages queued", round, held)
		}
		p.close() // the rebalance
		if held := s.heldBytes.Load(); held != 0 {
			t.Fatalf("rebalance %d: %d bytes still held after the hand-over", round, held)
		}
	}
}

// A message read while the partition is being closed (the reader's last
// fetch) is not queued in a lane the close already released: it takes no
// read-ahead room, and reading stops.
func TestMessageReadAfterTheCloseHoldsNoBytes(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	p := testPartition(t, PerKey, 8, func(context.Context, *broker.Message) error { <-release; return nil })
	ctx := context.Background()
	if !p.dispatch(ctx, record(0, "k", nil)) { // runs and holds the lane of k
		t.Fatal("the first message was not started")
	}
	p.close()
	if p.dispatch(ctx, record(1, "k", nil)) {
		t.Error("reading goes on after the close")
	}
	if held := p.s.heldBytes.Load(); held != 0 {
		t.Fatalf("%d bytes held after the close", held)
	}
}

// produceHeld answers produce requests once release is closed; entered,
// when set, is closed once a request is in the transport.
type produceHeld struct {
	release chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (f *produceHeld) RoundTrip(ctx context.Context, _ net.Addr, m protocol.Message) (protocol.Message, error) {
	req, ok := m.(*produceAPI.Request)
	if !ok {
		return nil, errors.New("unexpected request")
	}
	if f.entered != nil {
		f.once.Do(func() { close(f.entered) })
	}
	select {
	case <-f.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := &produceAPI.Response{}
	for _, t := range req.Topics {
		rt := produceAPI.ResponseTopic{Topic: t.Topic}
		for _, p := range t.Partitions {
			rt.Partitions = append(rt.Partitions, produceAPI.ResponsePartition{Partition: p.Partition})
		}
		res.Topics = append(res.Topics, rt)
	}
	return res, nil
}

// A retry copy still being written when its settle call gave up keeps the
// partition busy: a hand-over waits for its write (or, giving up, leaves
// the partition unclean) rather than commit as if nothing ran, and the
// original is settled once the copy is written.
func TestHandOverWaitsForARetryCopyInFlight(t *testing.T) {
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error { return nil })
	f := &produceHeld{release: make(chan struct{}), entered: make(chan struct{})}
	c := &conn{client: &kafkago.Client{Addr: kafkago.TCP("127.0.0.1:1"), Transport: f}, buf: newSendBuffer(1 << 20)}
	newSenders(c)
	c.storePartitions("orders", []int{0})
	c.leaders.Store("orders", map[int]int{0: 1})
	p.s.c, p.s.a = c, &Adapter{brokers: []string{"127.0.0.1:1"}, batchSize: 100}
	p.track(0)
	d := p.delivery(record(0, "", nil), nil)
	// The settle call gives up once the copy's request is in the transport
	// (in flight, its outcome not known yet), however long it takes to get
	// there.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-f.entered:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := d.Retry(ctx, 0, nil); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if p.waitIdle(short) {
		t.Fatal("a retry copy is being written: the hand-over saw the partition idle")
	}
	close(f.release)
	long, cancelLong := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelLong()
	if !p.waitIdle(long) {
		t.Fatal("the copy written: the partition still busy")
	}
	if pos, _ := p.position(); pos != 1 {
		t.Fatalf("the copy written: position %d, want 1 (the original settled)", pos)
	}
}
