package kit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

func TestBatcherFlushesEverythingInBoundedBatches(t *testing.T) {
	var mu sync.Mutex
	var got []int
	maxBatch := 0
	gate := make(chan struct{})
	b := kit.NewBatcher(8, func(items []int) {
		<-gate
		mu.Lock()
		defer mu.Unlock()
		got = append(got, items...)
		maxBatch = max(maxBatch, len(items))
	})
	b.Start()
	var wg sync.WaitGroup
	var queued atomic.Int32
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.Add(i) == nil {
				queued.Add(1)
			}
		}()
	}
	// The first flush is held until a burst has queued behind it.
	gomega.NewWithT(t).Eventually(queued.Load).WithTimeout(5 * time.Second).WithPolling(time.Millisecond).
		Should(gomega.BeNumerically(">=", 20))
	close(gate)
	wg.Wait()
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 100 || maxBatch > 8 || maxBatch < 2 {
		t.Fatalf("flushed %d items, largest batch %d", len(got), maxBatch)
	}
	if err := b.Add(1); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Add after Close = %v", err)
	}
}

func TestBatcherCloseIsBoundedByItsContext(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	b := kit.NewBatcher(1, func([]int) { <-block })
	b.Start()
	if err := b.Add(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.Close(ctx); !errors.Is(err, broker.ErrDrainTimeout) {
		t.Fatalf("Close = %v", err)
	}
}
