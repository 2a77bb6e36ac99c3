package channelstest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
)

// crashes declares the crash scenarios: consumer processes killed mid-stream.
func (s *faultSuite) crashes() {
	tg, ctx, claimWait := s.tg, s.ctx, s.claimWait

	// 1. Two consumer processes of one group; one is SIGKILLed mid-stream.
	crash := func(scenario string, maxRetries int) {
		// Only for targets whose consumers can run in other processes (not memory).
		itIf(tg.Processes, fmt.Sprintf("%s: a consumer process killed mid-stream loses no message", scenario), func() {
			const total = 2000
			ch, group, dlq := uniq("fault.crash"), uniq("fault-crash"), uniq("fault.crash.DLQ")
			dead := &deadRecorder{}
			s.h.node([]any{&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}}})
			cfg := childConfig{Channel: ch, Group: group, MaxRetries: maxRetries, MaxInFlight: 10, Work: 15 * time.Millisecond, DeadLetter: dlq}
			a, b := startFaultChild(tg, "a", cfg), startFaultChild(tg, "b", cfg)
			a.waitReady()
			b.waitReady()

			snd := s.h.sender()
			var mu sync.Mutex
			var sent []int
			var sendErrs atomic.Int32
			sending := make(chan struct{})
			go func() {
				defer GinkgoRecover()
				defer close(sending)
				tick := time.NewTicker(time.Millisecond) // paced: the kill lands mid-stream
				defer tick.Stop()
				for i := range total {
					<-tick.C
					if err := snd.SendToChannel(ctx, ch, faultPayload{Seq: i}); err != nil {
						sendErrs.Add(1)
						continue
					}
					mu.Lock()
					sent = append(sent, i)
					mu.Unlock()
				}
			}()
			Eventually(a.count, 30*time.Second).Should(BeNumerically(">=", 200), "member a processes some first")
			mu.Lock()
			sentAtKill := len(sent)
			mu.Unlock()
			byAAtKill := a.count()
			a.killNow()
			Eventually(sending, 60*time.Second).Should(BeClosed())

			runs := func() []processed { return append(a.all(), b.all()...) }
			progress := func() int { return len(runs()) + dead.count() }
			settle(func() bool { return distinctSeqs(runs()) >= total || b.dead() }, progress, claimWait, 60*time.Second)
			quietFor(progress, 2*tg.ClaimTime+500*time.Millisecond, 20*time.Second) // late redeliveries show as duplicates
			t := count(sent, runs(), dead.seqs())
			redelivered := 0
			for _, r := range b.all() {
				if r.attempt > 1 {
					redelivered++
				}
			}
			t.print(scenario, tg.Name, fmt.Sprintf("killed-at: sent=%d processed-by-killed=%d; survivor runs of redelivered messages=%d",
				sentAtKill, byAAtKill, redelivered))
			Expect(sendErrs.Load()).To(BeZero(), "sends failed with the broker up")
			Expect(b.dead()).To(BeFalse(), "the surviving consumer died: %s", b.death())
			Expect(t.lost).To(BeZero(), "%d of %d messages were never processed (%d messages were dead-lettered although the handler never fails)",
				t.lost, t.sent, t.deadLettered)
		})
	}
	crash("crash-noretries", channels.NoRetries)
	crash("crash-retries", 0)
}
