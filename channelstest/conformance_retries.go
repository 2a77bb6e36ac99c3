package channelstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// retriesSpecs are the conformance specs of retries and backoff.
func retriesSpecs(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

	It("retries only inside the failing group, MaxRetries redeliveries after the first attempt", func() {
		ch := uniq("test.fail.topic")
		bad, good := &Recorder{FailWith: errors.New("Something happened")}, &Recorder{}
		h.node([]any{
			&Service{Name: "sub1", Channels: channels.Channels{ch: {MaxRetries: 5, Handler: bad.Handle}}},
			&Service{Name: "sub2", Channels: channels.Channels{ch: {MaxRetries: 5, Handler: good.Handle}}},
		})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, map[string]int{"test": 1})).To(Succeed())
		Eventually(bad.Count).Should(Equal(6))
		Consistently(bad.Count).Should(Equal(6))
		Expect(good.Count()).To(Equal(1))
		var attempts []int
		for _, m := range bad.All() {
			attempts = append(attempts, m.Attempt)
		}
		Expect(attempts).To(Equal([]int{1, 2, 3, 4, 5, 6}))
	})

	It("waits the backoff between attempts", func() {
		ch := uniq("test.backoff.topic")
		var mu sync.Mutex
		var at []time.Time
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 2,
			Backoff: broker.ConstantBackoff(300 * time.Millisecond),
			Handler: func(ctx context.Context, m *broker.Message) error {
				mu.Lock()
				at = append(at, time.Now())
				mu.Unlock()
				return errors.New("again")
			}}}}})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, 1)).To(Succeed())
		Eventually(func() int { mu.Lock(); defer mu.Unlock(); return len(at) }).Should(Equal(3))
		mu.Lock()
		defer mu.Unlock()
		Expect(at[1].Sub(at[0])).To(BeNumerically(">=", 290*time.Millisecond))
		Expect(at[2].Sub(at[1])).To(BeNumerically(">=", 290*time.Millisecond))
	})

	It("does not let a message in backoff block the others", func() {
		ch := uniq("test.backoff.block.topic")
		var okCount atomic.Int32
		var failedOnce, warm atomic.Bool
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 1,
			Backoff: broker.ConstantBackoff(3 * time.Second),
			Handler: func(ctx context.Context, m *broker.Message) error {
				var u user
				Expect(m.Decode(&u)).To(Succeed())
				if u.ID < 0 {
					warm.Store(true)
					return nil
				}
				if u.ID == 0 && failedOnce.CompareAndSwap(false, true) {
					return errors.New("first one fails once")
				}
				okCount.Add(1)
				return nil
			}}}}})
		snd := h.sender()
		// The consumer is consuming before the measured sends (a broker may
		// hand a new group its partitions some time after Start).
		Expect(snd.SendToChannel(ctx, ch, user{ID: -1})).To(Succeed())
		Eventually(warm.Load).Should(BeTrue())
		for i := range 5 {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		Eventually(okCount.Load, 2*time.Second).Should(BeEquivalentTo(4))
		Eventually(okCount.Load).Should(BeEquivalentTo(5))
	})

	It("runs a due retry before the backlog of new messages", func() {
		ch := uniq("test.retry.first.topic")
		const n = 600
		var mu sync.Mutex
		var order []int
		failed := false
		var warm atomic.Bool
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 2,
			Handler: func(ctx context.Context, m *broker.Message) error {
				var i int
				Expect(m.Decode(&i)).To(Succeed())
				if i < 0 {
					warm.Store(true)
					return nil
				}
				if err := SimulateWork(ctx, 5*time.Millisecond); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				order = append(order, i)
				if i == 0 && !failed {
					failed = true
					return errors.New("fail once")
				}
				return nil
			}}}}})
		snd := h.sender()
		// The backlog builds up while the consumer consumes (a broker may
		// hand a new group its partitions some time after Start).
		Expect(snd.SendToChannel(ctx, ch, -1)).To(Succeed())
		Eventually(warm.Load).Should(BeTrue())
		for i := range n {
			Expect(snd.SendToChannel(ctx, ch, i)).To(Succeed())
		}
		processed := func() int { mu.Lock(); defer mu.Unlock(); return len(order) }
		Eventually(processed, 3*h.timeout).Should(Equal(n + 1))
		mu.Lock()
		defer mu.Unlock()
		retryAt := -1
		for pos, i := range order[1:] {
			if i == 0 {
				retryAt = pos + 1
			}
		}
		// The retry is due 20 ms after the failure (plus a claim interval on
		// brokers that claim), ~10 messages later at 400 msg/s; without
		// priority it waits for a free slot behind the backlog.
		fmt.Fprintf(GinkgoWriter, "retry ran at position %d of %d\n", retryAt, n)
		Expect(retryAt).To(BeNumerically(">", 0))
		Expect(retryAt).To(BeNumerically("<", n/4), "the retry ran after %d of %d messages", retryAt, n)
	})

}
