package channelstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// The fault suite: crashes, broker restarts, stops under load, slow
// handlers, hostile input and a broker that is down at start, written once
// and run on every registered target whose hooks (see Target) allow the
// scenario. Each scenario prints one line
//
//	fault <scenario> <target>: sent=N processed=N duplicates=N dead-lettered=N lost=N [details]
//
// (see report) and fails when lost > 0. Specs labelled "serial" restart or
// stop the shared broker: they run only with CHANNELS_E2E_SERIAL=1, in the
// second phase of `make test`, when no other test package runs.

// serialPhase reports whether the specs that disturb the shared broker may run.
func serialPhase() bool { return os.Getenv("CHANNELS_E2E_SERIAL") == "1" }

// itIf declares a spec only where it applies: a target without the hook a
// scenario needs, or a serial spec outside the serial phase (which restarts
// the shared brokers: CHANNELS_E2E_SERIAL=1 go test -race -count=1 ./e2e
// -run TestConformance -args -ginkgo.label-filter=serial, run by make test),
// has no spec at all rather than a skipped one.
func itIf(cond bool, text string, args ...any) {
	if cond {
		It(text, args...)
	}
}

var _ = specs(func() {
	Describe("fault", Label("fault"), func() {
		targetsMu.Lock()
		ts := append([]Target(nil), targets...)
		targetsMu.Unlock()
		for _, tg := range ts {
			Describe(tg.Name, Label(tg.Name), func() {
				faults(tg)
			})
		}
	})
})

func faults(tg Target) {
	var h *harness
	ctx := context.Background()
	// claimWait covers a redelivery after a silent member: a few claim times.
	claimWait := 3*tg.ClaimTime + time.Second

	BeforeEach(func() { h = prepare(tg) })

	// 1. Two consumer processes of one group; one is SIGKILLed mid-stream.
	crash := func(scenario string, maxRetries int) {
		// Only for targets whose consumers can run in other processes (not memory).
		itIf(tg.Processes, fmt.Sprintf("%s: a consumer process killed mid-stream loses no message", scenario), func() {
			const total = 2000
			ch, group, dlq := uniq("fault.crash"), uniq("fault-crash"), uniq("fault.crash.DLQ")
			dead := &deadRecorder{}
			h.node([]any{&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}}})
			cfg := childConfig{Channel: ch, Group: group, MaxRetries: maxRetries, MaxInFlight: 10, Work: 15 * time.Millisecond, DeadLetter: dlq}
			a, b := startFaultChild(tg, "a", cfg), startFaultChild(tg, "b", cfg)
			a.waitReady()
			b.waitReady()

			snd := h.sender()
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

	// 2. The broker restarts under a paced producer and a running consumer.
	itIf(tg.Restart != nil && serialPhase(), "broker-restart: every accepted send is processed, consuming resumes by itself", Label("serial"), func() {
		ch := uniq("fault.restart")
		r := &seqRecorder{}
		h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {MaxInFlight: 10, Handler: r.handler("consumer")}}}})
		snd := h.sender()
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

	// 3a. Stop with a generous deadline while 50 handlers run.
	It("stop-drain: Stop under load drains in time, a new member gets the rest, nothing lost or run twice", func() {
		const total, senders = 3000, 8
		ch, group := uniq("fault.stop"), uniq("fault-stop")
		first, second := &seqRecorder{work: 20 * time.Millisecond}, &seqRecorder{work: time.Millisecond}
		p1 := h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: first.handler("first")}}}})
		wait := sendSpread(h.sender(), ch, total, senders)
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
		h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: second.handler("second")}}}})
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
		p1 := h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: first.handler("first")}}}})
		wait := sendSpread(h.sender(), ch, total, senders)
		wait()
		Eventually(first.running.Load, 20*time.Second).Should(BeNumerically(">=", 50))
		sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		start := time.Now()
		stopErr := p1.Stop(sctx)
		took := time.Since(start)
		cancel()
		h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 50, Handler: second.handler("second")}}}})
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
			h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 2, Handler: r.handler(node)}}}})
		}
		snd := h.sender()
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

	// 5. A plain-driver producer writes hostile entries between valid messages.
	// The consumer is a child process under a memory budget, with MaxInFlight 1
	// (FIFO): when it dies, the first hostile entry it left unaccounted is the
	// one that killed it; the entries after it are written again, in a new
	// round with a new consumer, so every entry gets a verdict.
	hostile := func(ser broker.Serializer) {
		scenario := "hostile-" + strings.ToLower(ser.Name())
		itIf(tg.Processes && tg.Hostile != nil, scenario+": valid messages are processed once, bad entries dead-lettered, the consumer survives", func() {
			// Every entry is written before the consumer could fall behind, and
			// none should wait for a redelivery: a consumer that handles nothing
			// for stallTime is stuck.
			stallTime := max(4*time.Second, tg.ClaimTime+2*time.Second)
			dlq := uniq("fault.hostile.DLQ")
			dead := &deadRecorder{}
			h.node([]any{&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}}}, channels.WithSerializer(ser))
			snd := h.sender(channels.WithSerializer(ser))
			deadFor := func(ch, id string) []*broker.Message {
				var out []*broker.Message
				for _, m := range dead.all() {
					if m.Headers["x-original-channel"] == ch && m.Headers["x-original-id"] == id {
						out = append(out, m)
					}
				}
				return out
			}

			var t tally
			var lines, problems, killers, deaths, unsupported []string
			hostileIDs := map[string]bool{} // channel|id of every hostile entry written
			dropped, verdicts := 0, 0
			pending := hostileCases(ser)
			for round := 1; len(pending) > 0; round++ {
				ch, group := uniq("fault.hostile"), uniq("fault-hostile")
				c := startFaultChild(tg, fmt.Sprintf("consumer-%d", round), childConfig{Channel: ch, Group: group, MaxInFlight: 1,
					Serializer: ser.Name(), DeadLetter: dlq, MemoryLimit: true})
				c.waitReady()
				seq := 0
				sendValid := func(n int) {
					for range n {
						Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: seq})).To(Succeed())
						seq++
					}
				}
				caseOf := map[string]hostileCase{}
				var order []string
				sendValid(10)
				for _, hc := range pending {
					id, err := tg.Hostile(ctx, ch, hc.entry)
					if errors.Is(err, errors.ErrUnsupported) {
						unsupported = append(unsupported, hc.name)
						continue
					}
					Expect(err).NotTo(HaveOccurred(), hc.name)
					caseOf[id] = hc
					order = append(order, id)
					hostileIDs[ch+"|"+id] = true
					sendValid(5)
				}
				sendValid(10)
				valid := make([]int, seq)
				for i := range valid {
					valid[i] = i
				}
				ran := func() map[string]int {
					n := map[string]int{}
					for _, r := range c.all() {
						n[r.id]++
					}
					return n
				}
				accounted := func() bool {
					if count(valid, c.all(), nil).lost > 0 {
						return false
					}
					r := ran()
					for _, id := range order {
						if r[id]+len(deadFor(ch, id)) == 0 {
							return false
						}
					}
					return true
				}
				progress := func() int { return c.count() + dead.count() }
				settle(func() bool { return c.dead() || accounted() }, progress, stallTime, 40*time.Second)
				if !c.dead() {
					quietFor(progress, 2*tg.ClaimTime+500*time.Millisecond, 20*time.Second)
				}

				rt := count(valid, c.all(), nil)
				t.sent += rt.sent
				t.processed += rt.processed
				t.duplicates += rt.duplicates
				t.lost += rt.lost
				r := ran()
				// A consumer alive but with valid messages left unprocessed made
				// no progress for the settle time: stalled by the entry before them.
				stalled := !c.dead() && rt.lost > 0
				broken := c.dead() || stalled
				var next []hostileCase
				killer := ""
				for _, id := range order {
					hc := caseOf[id]
					dl := deadFor(ch, id)
					var what string
					switch {
					case broken && killer == "" && r[id]+len(dl) == 0:
						killer = hc.name
						if c.dead() {
							what = "KILLED THE CONSUMER: " + c.death()
						} else {
							what = fmt.Sprintf("STALLED THE CONSUMER: no progress for %s, the valid messages after it not processed", stallTime)
						}
						if i := strings.Index(what, "\n"); i > 0 {
							what = what[:i]
						}
					case broken && killer != "" && r[id]+len(dl) == 0:
						next = append(next, hc) // not reached: next round
						continue
					case r[id]+len(dl) > 1:
						what = fmt.Sprintf("handled %d times (ran %d, dead-lettered %d)", r[id]+len(dl), r[id], len(dl))
						problems = append(problems, hc.name+": "+what)
					case len(dl) == 1:
						t.deadLettered++
						m := dl[0]
						what = fmt.Sprintf("dead-lettered (%s: %s)", m.Headers["x-error-name"], m.Headers["x-error-message"])
						if m.Headers["x-error-name"] == "" || m.Headers["x-error-message"] == "" {
							problems = append(problems, hc.name+": dead letter without x-error-name or x-error-message")
						}
					case r[id] == 1:
						t.processed++
						what = "processed"
						switch {
						case hc.mayProcess:
						case hc.leadingMsgPackValue && ser.Name() == "MsgPack":
							what += " (MsgPack decodes the complete value in its first byte and ignores the trailing bytes)"
						default:
							problems = append(problems, hc.name+": a bad entry reached the handler")
						}
					default:
						dropped++
						what = "dropped (neither run nor dead-lettered)"
					}
					t.sent++
					verdicts++
					lines = append(lines, fmt.Sprintf("  %-36s %s", hc.name, what))
				}
				switch {
				case c.dead():
					if killer == "" {
						killer = "(no hostile entry pending)"
					}
					killers = append(killers, killer)
					deaths = append(deaths, fmt.Sprintf("round %d: died at %s: %s", round, killer, c.death()))
				case stalled && killer != "":
					killers = append(killers, killer+" (stalled)")
					deaths = append(deaths, fmt.Sprintf("round %d: stalled at %s", round, killer))
					c.killNow()
				}
				pending = next
			}
			for _, m := range dead.all() {
				if !hostileIDs[m.Headers["x-original-channel"]+"|"+m.Headers["x-original-id"]] {
					problems = append(problems, "a valid message was dead-lettered: "+m.Headers["x-error-message"])
				}
			}
			details := fmt.Sprintf("hostile=%d dropped=%d", verdicts, dropped)
			if len(unsupported) > 0 {
				details += " unsupported=" + strings.Join(unsupported, ",")
			}
			if len(killers) > 0 {
				details += fmt.Sprintf(" CONSUMER DIED OR STALLED %d times, at: %s", len(killers), strings.Join(killers, ", "))
			}
			t.print(scenario, tg.Name, details)
			for _, l := range lines {
				report("%s", l)
			}
			Expect(deaths).To(BeEmpty(), "the consumer child (address-space budget %d MiB above its start, heap limit %d MiB) died or stalled",
				childAddressBudget>>20, childHeapLimit>>20)
			Expect(problems).To(BeEmpty())
			Expect(t.lost).To(BeZero(), "valid messages not processed")
			Expect(t.duplicates).To(BeZero())
		})
	}
	hostile(broker.JSON{})
	hostile(broker.MsgPack{})

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
		p := h.plugin()
		Expect(p.Register(&Service{Name: "fault", Channels: h.withTargetOptions(channels.Channels{ch: {Handler: r.handler("p")}})})).To(Succeed())
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
			snd := h.sender()
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
