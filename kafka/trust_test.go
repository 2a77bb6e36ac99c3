package kafka

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// testPartition is a partition of a subscription with no connection, for
// the dispatch logic: handlers run through the kit; nothing is committed
// (no careful mode) and no retry copy is written (the handler succeeds).
func testPartition(t *testing.T, ordering Ordering, maxInFlight int, h broker.Handler) *partition {
	t.Helper()
	ch := &broker.Channel{Name: "orders", Group: "g", MaxInFlight: maxInFlight, Handler: h,
		Retry: broker.RetryPolicy{MaxRetries: 3, Backoff: broker.ExponentialBackoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2}}}
	ch.Normalize()
	a := &Adapter{brokers: []string{"127.0.0.1:1"}}
	s, err := newSubscription(a, nil, ch, ChannelOptions{Ordering: ordering}.withDefaults(), GroupID("g", "orders"))
	if err != nil {
		t.Fatal(err)
	}
	g := &generation{s: s, parts: map[int]*partition{}, handedOver: make(chan struct{})}
	p := newPartition(g, 0, 0)
	g.parts[0] = p
	t.Cleanup(func() { p.close() })
	return p
}

func record(off int64, key string, hdrs map[string]string) kafkago.Message {
	m := kafkago.Message{Offset: off, Value: []byte(`{"n":` + strconv.FormatInt(off, 10) + `}`), Time: time.Now(),
		Headers: toKafkaHeaders(hdrs)}
	if key != "" {
		m.Key = []byte(key)
	}
	return m
}

func copyHeaders(group string, notBefore time.Time, failed int) map[string]string {
	return map[string]string{broker.HeaderGroup: group, broker.HeaderRedeliveredCount: strconv.Itoa(failed),
		HeaderNotBefore: strconv.FormatInt(notBefore.UnixMilli(), 10)}
}

// x-retry-not-before is honoured only on this group's copies, never past
// the channel's longest backoff, and not at all when it lies further past
// the record's timestamp than any retry of the channel could have written.
func TestNotBeforeIsTrustedOnlyOnOurCopies(t *testing.T) {
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error { return nil })
	if p.s.maxBackoff != 400*time.Millisecond {
		t.Fatalf("longest backoff %s, want 400ms (100ms doubling, 3 retries)", p.s.maxBackoff)
	}
	now := time.Now()
	cases := []struct {
		name     string
		m        kafkago.Message
		min, max time.Duration
	}{
		{"our copy", record(1, "", copyHeaders("g", now.Add(300*time.Millisecond), 1)), 150 * time.Millisecond, 300 * time.Millisecond},
		{"a foreign message", record(2, "", map[string]string{HeaderNotBefore: strconv.FormatInt(now.Add(time.Hour).UnixMilli(), 10)}), 0, 0},
		{"centuries ahead", record(3, "", copyHeaders("g", now.AddDate(300, 0, 0), 1)), 0, 0},
		{"a future timestamp", func() kafkago.Message {
			m := record(4, "", copyHeaders("g", now.Add(time.Hour), 1))
			m.Time = now.Add(time.Hour)
			return m
		}(), 400 * time.Millisecond, 400 * time.Millisecond},
	}
	for _, c := range cases {
		d := p.delivery(c.m, nil)
		if w := p.wait(d); w < c.min || w > c.max {
			t.Errorf("%s: wait %s, want [%s, %s]", c.name, w, c.min, c.max)
		}
		if _, seen := d.msg.Headers[HeaderNotBefore]; seen {
			t.Errorf("%s: the handler sees %s", c.name, HeaderNotBefore)
		}
	}
}

// A copy of this group whose x-redelivered-count is past MaxRetries runs
// (as the last attempt) instead of being given up unrun.
func TestForgedRedeliveredCountStillRuns(t *testing.T) {
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error { return nil })
	d := p.delivery(record(1, "", copyHeaders("g", time.Now(), 99)), nil)
	if d.msg.Attempt != 4 {
		t.Fatalf("attempt %d, want 4 (MaxRetries+1)", d.msg.Attempt)
	}
	if _, run := kit.Admit(p.s.ch, &d.Delivery); !run {
		t.Fatal("a forged count made the message be given up without running")
	}
}

// A retry copy waiting for its backoff keeps its lane: on an ordered
// channel the messages of its key behind it wait for it, and each message
// runs once.
func TestHeldCopyKeepsItsLane(t *testing.T) {
	var mu sync.Mutex
	var order []int64
	running, overlap := 0, false
	p := testPartition(t, PerKey, 4, func(_ context.Context, m *broker.Message) error {
		mu.Lock()
		running++
		overlap = overlap || running > 1
		order = append(order, m.Raw.(kafkago.Message).Offset)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
		return nil
	})
	ctx := context.Background()
	p.dispatch(ctx, record(0, "k", copyHeaders("g", time.Now().Add(300*time.Millisecond), 1)))
	p.dispatch(ctx, record(1, "k", nil))
	p.dispatch(ctx, record(2, "k", nil))
	eventually(t, 5*time.Second, "the three messages run and settled", func() bool {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		pos, _ := p.position()
		return n >= 3 && pos == 3
	})
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 3 || order[0] != 0 || order[1] != 1 || order[2] != 2 || overlap {
		t.Fatalf("runs %v (overlap %v), want 0, 1, 2 one at a time", order, overlap)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != 0 || len(p.lanes) != 0 {
		t.Fatalf("held %d, lanes %v after every message ran", p.held, p.lanes)
	}
}

// Records that claim to be this group's copies with a not-before time
// centuries ahead do not hold the partition: none is held, so the read
// gate (maxHeld) stays open and they run at once.
func TestForgedNotBeforeDoesNotCloseTheReadGate(t *testing.T) {
	var mu sync.Mutex
	ran := 0
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error {
		mu.Lock()
		ran++
		mu.Unlock()
		return nil
	})
	ctx := context.Background()
	n := p.maxHeld() + 1
	for i := range n {
		p.dispatch(ctx, record(int64(i), "", copyHeaders("g", time.Now().AddDate(500, 0, 0), 1)))
		p.mu.Lock()
		held := p.held
		p.mu.Unlock()
		if held > 0 {
			t.Fatalf("after %d forged records, %d are held", i+1, held)
		}
	}
	eventually(t, 5*time.Second, "every forged record run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ran == n
	})
}

// A brand-new group starts at the end of every partition; in a group with
// committed offsets, a partition without one (added since) starts at its
// beginning.
func TestStartOffsetsOfNewPartitions(t *testing.T) {
	missing, first := startOffsets([]int{0, 1, 2}, map[int]bool{}, false)
	if first || len(missing) != 3 || missing[0].Timestamp != kafkago.LastOffset {
		t.Fatalf("new group: %v %v", missing, first)
	}
	missing, first = startOffsets([]int{0, 1, 2, 3}, map[int]bool{0: true, 1: true}, false)
	if !first || len(missing) != 2 || missing[0].Partition != 2 || missing[1].Partition != 3 || missing[0].Timestamp != kafkago.FirstOffset {
		t.Fatalf("existing group with new partitions: %v %v", missing, first)
	}
	if missing, first = startOffsets([]int{0}, nil, true); !first || missing[0].Timestamp != kafkago.FirstOffset {
		t.Fatalf("FromBeginning: %v %v", missing, first)
	}
}

// A message read or released from hold after its partition was closed
// (handed over) never runs here: its next owner runs it.
func TestNoRunAfterTheHandOver(t *testing.T) {
	var ran atomic.Int32
	p := testPartition(t, Unordered, 2, func(context.Context, *broker.Message) error { ran.Add(1); return nil })
	p.close()
	p.dispatch(context.Background(), record(0, "", nil))
	d := p.delivery(record(1, "", nil), nil)
	p.mu.Lock()
	p.held++
	p.mu.Unlock()
	p.startLater(d)
	consistently(t, 200*time.Millisecond, "no message run after the hand-over", func() bool { return ran.Load() == 0 })
	if p.s.Free() != 2 {
		t.Fatalf("%d of 2 slots free", p.s.Free())
	}
}

// The messages a subscription holds without a slot are bounded in bytes
// across its partitions: once they reach ReadAheadBytes, a partition that
// holds any is not read further until they are started.
func TestHeldMessagesAreBoundedInBytes(t *testing.T) {
	release := make(chan struct{})
	p := testPartition(t, PerKey, 1, func(context.Context, *broker.Message) error { <-release; return nil })
	p.s.readAhead = 64 << 10
	big := func(off int64) kafkago.Message {
		m := record(off, "k", nil)
		m.Value = make([]byte, 16<<10)
		return m
	}
	ctx := context.Background()
	p.dispatch(ctx, big(0)) // runs, and holds the lane of k
	n := int64(1)
	for {
		p.mu.Lock()
		wait := p.mustWait()
		p.mu.Unlock()
		if wait {
			break
		}
		if n > 10 {
			t.Fatalf("%d messages of 16 KiB held without closing the read gate of 64 KiB", n-1)
		}
		p.dispatch(ctx, big(n))
		n++
	}
	if held := p.s.heldBytes.Load(); held < 64<<10 || held > 64<<10+32<<10 {
		t.Fatalf("%d bytes held when the gate closed", held)
	}
	close(release)
	eventually(t, 5*time.Second, "the read gate open and no byte held after the lane ran", func() bool {
		p.mu.Lock()
		wait := p.mustWait()
		p.mu.Unlock()
		return !wait && p.s.heldBytes.Load() == 0
	})
}

// Run counts are read from commit metadata in both forms, refused when
// malformed, and a commit made while a counted message is not settled
// keeps its count.
func TestRunCountMetadata(t *testing.T) {
	for _, c := range []struct {
		meta string
		pos  int64
		runs int
		off  int64
		ok   bool
	}{
		{"run:2", 10, 2, 10, true}, {"run:3:14", 10, 3, 14, true}, {"run:3:9", 10, 0, 0, false},
		{"run:0", 10, 0, 0, false}, {"run:-1", 10, 0, 0, false}, {"run:x", 10, 0, 0, false},
		{"live", 10, 0, 0, false}, {"clean", 10, 0, 0, false}, {"run:99999999", 0, 1 << 20, 0, true},
	} {
		runs, off, ok := parseRun(c.meta, c.pos)
		if runs != c.runs || off != c.off || ok != c.ok {
			t.Errorf("%q at %d: %d %d %v", c.meta, c.pos, runs, off, ok)
		}
	}
	p := testPartition(t, Unordered, 1, func(context.Context, *broker.Message) error { return nil })
	p.pos = 5
	p.beCareful(2, 5)
	if m := p.uncleanMeta(); m != "run:2" {
		t.Fatalf("a counted message not settled: %q", m)
	}
	p.pos = 6
	if m := p.uncleanMeta(); m != metaLive {
		t.Fatalf("the counted message settled: %q", m)
	}
}
