package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/kafka"
)

// orderRecorder records, per key, the sequence numbers in the order their
// handlers started, and the most handlers of one key and of all keys that
// ran at once.
type orderRecorder struct {
	mu          sync.Mutex
	seqs        map[string][]int
	running     map[string]int
	total       int
	maxPerKey   int
	maxTotal    int
	failOnce    map[string]bool // key|seq whose first run fails
	failedAlrdy map[string]bool
}

func newOrderRecorder() *orderRecorder {
	return &orderRecorder{seqs: map[string][]int{}, running: map[string]int{}, failOnce: map[string]bool{}, failedAlrdy: map[string]bool{}}
}

func (r *orderRecorder) handle(ctx context.Context, m *channels.Message) error {
	var p struct {
		Key string `json:"key"`
		Seq int    `json:"seq"`
	}
	if err := m.Decode(&p); err != nil {
		return err
	}
	id := fmt.Sprintf("%s|%d", p.Key, p.Seq)
	r.mu.Lock()
	r.running[p.Key]++
	r.total++
	r.maxPerKey = max(r.maxPerKey, r.running[p.Key])
	r.maxTotal = max(r.maxTotal, r.total)
	fail := r.failOnce[id] && !r.failedAlrdy[id]
	if fail {
		r.failedAlrdy[id] = true
	} else {
		r.seqs[p.Key] = append(r.seqs[p.Key], p.Seq)
	}
	r.mu.Unlock()
	// Work that ignores cancellation: the bookkeeping below must run.
	_ = channelstest.SimulateWork(context.WithoutCancel(ctx), 2*time.Millisecond)
	r.mu.Lock()
	r.running[p.Key]--
	r.total--
	r.mu.Unlock()
	if fail {
		return errors.New("fails once")
	}
	return nil
}

func (r *orderRecorder) done(keys, per int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.seqs {
		n += len(s)
	}
	return n >= keys*per
}

// sendKeyed sends per messages for each of keys keys, each with its key,
// from one goroutine per key.
func sendKeyed(t *testing.T, p *channels.Plugin, ch string, keys, per int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", k)
			for i := range per {
				if err := p.SendToChannel(context.Background(), ch, map[string]any{"key": key, "seq": i}, kafka.WithKey(key)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// PerKey ordering: the messages of one key run one at a time and in the
// order they were sent, a failed one (retried in place) included; different
// keys run at the same time.
func TestPerKeyOrdering(t *testing.T) {
	needKafka(t)
	ch := unique("order.perkey")
	const keys, per = 6, 40
	r := newOrderRecorder()
	for k := range keys {
		r.failOnce[fmt.Sprintf("k%d|%d", k, 7)] = true
	}
	opts := timings
	opts.Ordering = kafka.PerKey
	opts.Topic.Partitions = 2 // several keys share a partition
	startPlugin(t, &service{Name: "ordered", Channels: channels.Channels{ch: {MaxInFlight: 8, MaxRetries: 2,
		Backoff: broker.ConstantBackoff(20 * time.Millisecond), AdapterOptions: []any{opts}, Handler: r.handle}}})
	sendKeyed(t, startPlugin(t, nil), ch, keys, per)
	eventually(t, 60*time.Second, "every message handled", func() bool { return r.done(keys, per) })
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, seqs := range r.seqs {
		for i, s := range seqs {
			if s != i {
				t.Fatalf("key %s ran out of order: %v", key, seqs)
			}
		}
	}
	if r.maxPerKey != 1 {
		t.Fatalf("%d handlers of one key ran at once", r.maxPerKey)
	}
	if r.maxTotal < 2 {
		t.Fatalf("different keys never ran at the same time (at most %d at once)", r.maxTotal)
	}
	t.Logf("at most %d handlers at once across keys", r.maxTotal)
}

// PerPartition ordering: one message of a partition at a time, in order.
func TestPerPartitionOrdering(t *testing.T) {
	needKafka(t)
	ch := unique("order.perpartition")
	const keys, per = 3, 30
	r := newOrderRecorder()
	opts := timings
	opts.Ordering = kafka.PerPartition
	opts.Topic.Partitions = 1
	startPlugin(t, &service{Name: "ordered", Channels: channels.Channels{ch: {MaxInFlight: 8, AdapterOptions: []any{opts}, Handler: r.handle}}})
	sendKeyed(t, startPlugin(t, nil), ch, keys, per)
	eventually(t, 60*time.Second, "every message handled", func() bool { return r.done(keys, per) })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.maxTotal != 1 {
		t.Fatalf("%d handlers of the partition ran at once", r.maxTotal)
	}
	for key, seqs := range r.seqs {
		for i, s := range seqs {
			if s != i {
				t.Fatalf("key %s ran out of order: %v", key, seqs)
			}
		}
	}
}

// Unordered: MaxInFlight handlers of one partition run at once, never
// more, keyed or not.
func TestConcurrencyWithinAPartition(t *testing.T) {
	needKafka(t)
	ch := unique("order.unordered")
	const per = 200
	r := newOrderRecorder()
	opts := timings
	opts.Ordering = kafka.Unordered
	opts.Topic.Partitions = 1
	startPlugin(t, &service{Name: "free", Channels: channels.Channels{ch: {MaxInFlight: 10, AdapterOptions: []any{opts}, Handler: r.handle}}})
	sendKeyed(t, startPlugin(t, nil), ch, 1, per)
	eventually(t, 60*time.Second, "every message handled", func() bool { return r.done(1, per) })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.maxTotal < 2 || r.maxTotal > 10 {
		t.Fatalf("at most %d handlers of one partition ran at once, want 2..10", r.maxTotal)
	}
}

// TestKeyedMessagesKeepTheirOrderByDefault: 100 keyed messages (5 keys)
// on a channel with MaxInFlight 10 and no ordering option run in the order
// of each key, one at a time per key.
func TestKeyedMessagesKeepTheirOrderByDefault(t *testing.T) {
	needKafka(t)
	ch := unique("order.default")
	const keys, per = 5, 20
	r := newOrderRecorder()
	startPlugin(t, &service{Name: "default", Channels: channels.Channels{ch: {MaxInFlight: 10, Handler: r.handle}}})
	sendKeyed(t, startPlugin(t, nil), ch, keys, per)
	eventually(t, 60*time.Second, "every message handled", func() bool { return r.done(keys, per) })
	r.mu.Lock()
	defer r.mu.Unlock()
	outOfOrder := 0
	for _, seqs := range r.seqs {
		for i, s := range seqs {
			if s != i {
				outOfOrder++
			}
		}
	}
	if outOfOrder > 0 || r.maxPerKey != 1 {
		t.Fatalf("%d of %d messages out of their key's order, %d of one key at once", outOfOrder, keys*per, r.maxPerKey)
	}
}
