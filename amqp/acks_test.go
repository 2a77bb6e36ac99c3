package amqp

import (
	"context"
	"reflect"
	"sync"
	"testing"
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

// TestAckerFlush drives flush directly (no batcher timing): a settled run
// from the lowest outstanding tag is one multiple ack; tags beyond a gap
// are acked one by one and skipped when the gap closes; nacked tags close
// gaps without an ack.
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
	want := []ackCall{{tag: 3, multiple: true}, {tag: 6}, {tag: 5}, {tag: 4, nack: true}, {tag: 7, multiple: true}}
	if !reflect.DeepEqual(f.calls, want) {
		t.Fatalf("calls %+v\nwant  %+v", f.calls, want)
	}
}

func TestAckerBatcher(t *testing.T) {
	f := &fakeAcks{}
	k := newAcker(f, 16)
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
