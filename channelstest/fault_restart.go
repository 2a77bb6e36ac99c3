package channelstest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
)

// restarts declares the restart scenarios: the broker restarts under traffic, or is down at Start (serial specs).
func (s *faultSuite) restarts() {
	tg, ctx, claimWait := s.tg, s.ctx, s.claimWait

	// 2. The broker restarts under a paced producer and a running consumer.
	itIf(tg.Restart != nil && serialPhase(), "broker-restart: every accepted send is processed, consuming resumes by itself", Label("serial"), func() {
		ch := uniq("fault.restart")
		r := &seqRecorder{}
		s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {MaxInFlight: 10, Handler: r.handler("consumer")}}}})
		snd := s.h.sender()
		var mu sync.Mutex
		var sent []int
		var sendErrs atomic.Int32
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(stopped)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				err := snd.SendToChannel(sctx, ch, faultPayload{Seq: i})
				cancel()
				if err != nil {
					sendErrs.Add(1)
					continue
				}
				mu.Lock()
				sent = append(sent, i)
				mu.Unlock()
			}
		}()
		nSent := func() int { mu.Lock(); defer mu.Unlock(); return len(sent) }
		Eventually(r.count, 20*time.Second).Should(BeNumerically(">=", 100))
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		restartErr := tg.Restart(rctx)
		cancel()
		took := time.Since(start)
		Expect(restartErr).NotTo(HaveOccurred())
		atUp := nSent()
		Eventually(nSent, 60*time.Second).Should(BeNumerically(">=", atUp+200), "sends work again after the restart")
		close(stop)
		<-stopped
		mu.Lock()
		all := append([]int(nil), sent...)
		mu.Unlock()
		settle(func() bool { return count(all, r.all(), nil).lost == 0 }, r.count, claimWait+5*time.Second, 60*time.Second)
		quietFor(r.count, claimWait, 20*time.Second)
		t := count(all, r.all(), nil)
		t.print("broker-restart", tg.Name, fmt.Sprintf("send-errors=%d restart=%s", sendErrs.Load(), took.Round(100*time.Millisecond)))
		Expect(t.lost).To(BeZero(), "accepted sends never processed")
	})

	// 6. Start while the broker is down, then after it is back.
	itIf(tg.BrokerDown != nil && tg.BrokerUp != nil && serialPhase(), "start-down: Start with the broker down fails within its context, a later Start works", Label("serial"), func() {
		ch := uniq("fault.startdown")
		Expect(tg.BrokerDown(ctx)).To(Succeed())
		up := false
		DeferCleanup(func() {
			if !up {
				Expect(tg.BrokerUp(context.Background())).To(Succeed())
			}
		})
		r := &seqRecorder{}
		p := s.h.plugin()
		Expect(p.Register(&Service{Name: "fault", Channels: s.h.withTargetOptions(channels.Channels{ch: {Handler: r.handler("p")}})})).To(Succeed())
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res := make(chan error, 1)
		start := time.Now()
		go func() { res <- p.Start(sctx) }()
		var startErr error
		Eventually(res, 15*time.Second).Should(Receive(&startErr), "Start with the broker down does not return")
		took := time.Since(start)
		cancel()

		Expect(tg.BrokerUp(ctx)).To(Succeed())
		up = true
		sctx, cancel = context.WithTimeout(ctx, 20*time.Second)
		laterErr := p.Start(sctx)
		cancel()
		if laterErr == nil {
			DeferCleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = p.Stop(ctx)
			})
		}
		const total = 10
		all := make([]int, total)
		if laterErr == nil {
			snd := s.h.sender()
			for i := range total {
				all[i] = i
				Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: i})).To(Succeed())
			}
			settle(func() bool { return distinctSeqs(r.all()) >= total }, r.count, claimWait+2*time.Second, 20*time.Second)
		}
		t := count(all, r.all(), nil)
		t.print("start-down", tg.Name, fmt.Sprintf("start-error-after=%s start-error=%q later-start-error=%q",
			took.Round(time.Millisecond), fmt.Sprint(startErr), fmt.Sprint(laterErr)))
		Expect(startErr).To(HaveOccurred(), "Start succeeded with the broker down")
		Expect(took).To(BeNumerically("<", 4*time.Second), "Start outlived its 3s context")
		Expect(laterErr).NotTo(HaveOccurred(), "Start after the broker came back")
		Expect(t.lost).To(BeZero())
	})
}
