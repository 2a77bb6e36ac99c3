package kit_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/microchannels/channels/kit"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// TestBeatGoesOnThroughTheDrain: the beat keeps refreshing while a drain
// waits for a slow handler, and has stopped, for good, when Finish runs.
func TestBeatGoesOnThroughTheDrain(t *testing.T) {
	for _, deadline := range []bool{false, true} {
		g, ch := newGated(1, "1")
		c := kit.NewConsumer(ch)
		c.Start()
		var beats atomic.Int64
		c.Beat(time.Millisecond, func() { beats.Add(1) })
		if _, ok := c.AwaitFetch(); !ok {
			t.Fatal("AwaitFetch refused before the drain")
		}
		c.Hold(delivery("1", &settled{}))
		eventually(t, "1 running", func() bool { return len(g.startedIDs()) == 1 })

		ctx, cancel := context.WithCancel(context.Background())
		atFinish := make(chan int64, 1)
		drained := make(chan error, 1)
		go func() {
			drained <- c.Drain(ctx, kit.DrainHooks{Finish: func(context.Context, bool) error {
				atFinish <- beats.Load()
				return nil
			}})
		}()
		eventually(t, "the drain to start", c.IsStopping)
		from := beats.Load()
		eventually(t, "beats while the drain waits for the handler", func() bool { return beats.Load() >= from+5 })
		if deadline {
			cancel() // the handler is cut: its context is cancelled
		} else {
			close(g.gates["1"])
		}
		err := <-drained
		var de *broker.DrainError
		if deadline != errors.As(err, &de) {
			t.Fatalf("deadline %v: drain returned %v", deadline, err)
		}
		last := <-atFinish
		w := gomega.NewWithT(t)
		if !deadline {
			w.Consistently(beats.Load).WithTimeout(50*time.Millisecond).WithPolling(time.Millisecond).
				Should(gomega.Equal(last), "no beat once Finish ran")
		} else {
			// The drain's context had ended: Finish does not wait for a
			// beat under way, but no other starts.
			w.Eventually(func(g gomega.Gomega) {
				v := beats.Load()
				g.Consistently(beats.Load).WithTimeout(20 * time.Millisecond).WithPolling(time.Millisecond).Should(gomega.Equal(v))
			}).WithTimeout(5*time.Second).Should(gomega.Succeed(), "the beat to stop")
		}
		cancel()
	}
}
