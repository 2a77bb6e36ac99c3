package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"errors"
	"testing"
	"time"
)

func TestInflight(t *testing.T) {
	f := newInflight(2)
	ctx := context.Background()
	for i := range 2 {
		if !f.Acquire(ctx) {
			t.Fatalf("slot %d not acquired", i)
		}
	}
	if f.TryAcquire() || f.Free() != 0 || f.Running() != 2 {
		t.Fatal("bound not enforced")
	}
	release := make(chan struct{})
	f.Go(func() { <-release })
	f.Release()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := f.Wait(short); !errors.Is(err, broker.ErrDrainTimeout) {
		t.Fatalf("Wait = %v", err)
	}
	close(release)
	if err := f.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if f.Acquire(ctx) || f.TryAcquire() {
		t.Fatal("acquired after Close")
	}
}
