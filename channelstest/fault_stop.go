package channelstest

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
)

// stops declares the stop scenarios: Stop under load with generous and short deadlines, and slow handlers.
func (s *faultSuite) stops() {
	tg, ctx, claimWait := s.tg, s.ctx, s.claimWait

	// 3a. Stop with a generous deadline while 50 handlers run.
	It("stop-drain: Stop under load drains in time, a new member gets the rest, nothing lost or run twice", func() {
		const total, senders = 3000, 8
		ch, group := uniq("fault.stop"), uniq("fault-stop")
		first, second := &seqRecorder{work: 20 * time.Millisecond}, &seqRecorder{work: time.Millisecond}
		p1 := s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: first.handler("first")}}}})
		wait := sendSpread(s.h.sender(), ch, total, senders)
		Eventually(func() bool { return first.count() >= total/5 && first.running.Load() >= 10 }, 30*time.Second).Should(BeTrue(),
			"handlers running under load")
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		start := time.Now()
		stopErr := p1.Stop(sctx)
		took := time.Since(start)
		cancel()
		runningAfter := first.running.Load()
		byFirst := first.count()
		wait()
		s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: second.handler("second")}}}})
		runs := func() []processed { return append(first.all(), second.all()...) }
		progress := func() int { return len(runs()) }
		settle(func() bool { return distinctSeqs(runs()) >= total }, progress, claimWait+2*time.Second, 40*time.Second)
		quietFor(progress, claimWait, 20*time.Second)
		all := make([]int, total)
		for i := range all {
			all[i] = i
		}
		t := count(all, runs(), nil)
		t.print("stop-drain", tg.Name, fmt.Sprintf("stop=%s processed-before-stop=%d", took.Round(time.Millisecond), byFirst))
		Expect(stopErr).NotTo(HaveOccurred())
		Expect(runningAfter).To(BeZero(), "handlers still running after Stop returned")
		Expect(t.lost).To(BeZero())
		Expect(t.duplicates).To(BeZero(), "a drained stop settles every message it started")
	})

	// 3b. Stop with a deadline shorter than the handlers.
	It("stop-timeout: Stop with a too-short deadline returns ErrDrainTimeout, and every message is still processed", func() {
		const total, senders = 500, 8
		ch, group := uniq("fault.stopto"), uniq("fault-stopto")
		// The first member's handlers ignore cancellation (the worst case): they
		// finish after Stop returned, unacknowledged, so their messages come again.
		// Their work is long enough that a loaded machine, slow between seeing
		// them run and calling Stop, still stops them mid-run.
		first, second := &seqRecorder{work: 2 * time.Second}, &seqRecorder{work: 5 * time.Millisecond}
		p1 := s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: first.handler("first")}}}})
		wait := sendSpread(s.h.sender(), ch, total, senders)
		wait()
		Eventually(first.running.Load, 20*time.Second).Should(BeNumerically(">=", 50))
		sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		start := time.Now()
		stopErr := p1.Stop(sctx)
		took := time.Since(start)
		cancel()
		s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: second.handler("second")}}}})
		runs := func() []processed { return append(first.all(), second.all()...) }
		progress := func() int { return len(runs()) }
		settle(func() bool { return distinctSeqs(runs()) >= total }, progress, claimWait+2*time.Second, 40*time.Second)
		quietFor(progress, claimWait, 20*time.Second)
		all := make([]int, total)
		for i := range all {
			all[i] = i
		}
		t := count(all, runs(), nil)
		t.print("stop-timeout", tg.Name, fmt.Sprintf("stop=%s error=%q", took.Round(time.Millisecond), fmt.Sprint(stopErr)))
		Expect(stopErr).To(MatchError(channels.ErrDrainTimeout))
		Expect(took).To(BeNumerically("<", 5*time.Second), "Stop is bounded by its context")
		Expect(t.lost).To(BeZero())
	})

	// 4. A live handler slower than the claim time, two members of the group.
	// Only for targets with a claim timer: elsewhere a held message never moves to another member.
	itIf(tg.ClaimTime > 0, "slow-handler: a handler slower than the claim time is not run twice", func() {
		const total = 6
		ch, group := uniq("fault.slow"), uniq("fault-slow")
		// Started runs are recorded, so a second run shows even while the first is going.
		r := &seqRecorder{work: 3 * tg.ClaimTime, honourCtx: true, atStart: true}
		for _, node := range []string{"a", "b"} {
			s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 2, Handler: r.handler(node)}}}})
		}
		snd := s.h.sender()
		for i := range total {
			Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: i})).To(Succeed())
		}
		limit := 3*r.work + claimWait + 10*time.Second
		settle(func() bool { return distinctSeqs(r.all()) >= total && r.running.Load() == 0 }, r.count, r.work+claimWait, limit)
		quietFor(r.count, claimWait, 20*time.Second)
		t := count([]int{0, 1, 2, 3, 4, 5}, r.all(), nil)
		t.print("slow-handler", tg.Name, fmt.Sprintf("handler=%s claim-time=%s", r.work, tg.ClaimTime))
		Expect(t.lost).To(BeZero())
		Expect(t.duplicates).To(BeZero(), "a live slow handler's message was run again by another member")
	})
}
