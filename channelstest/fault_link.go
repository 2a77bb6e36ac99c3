package channelstest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// The link-fault scenarios: a member whose connections to the broker go
// through link-fault proxies (Target.Linked) while the link freezes, is
// reset, or slows down. Each prints its fault line like the other
// scenarios, with the times that matter.

var _ = specs(func() {
	Describe("fault", Label("fault", "link"), func() {
		targetsMu.Lock()
		ts := append([]Target(nil), targets...)
		targetsMu.Unlock()
		for _, tg := range ts {
			if tg.Linked == nil {
				continue
			}
			Describe(tg.Name, Label(tg.Name), func() {
				linkFaults(tg)
			})
		}
	})
})

// stopGrace is how much longer than its deadline a Stop may take.
const stopGrace = 250 * time.Millisecond

func linkFaults(tg Target) {
	var h *harness
	ctx := context.Background()
	claimWait := 3*tg.ClaimTime + 5*time.Second

	BeforeEach(func() { h = prepare(tg) })

	// linked starts a member on an adapter whose link the spec controls.
	linked := func(schemas []any, opts ...channels.Option) (*channels.Plugin, *Links) {
		GinkgoHelper()
		a, ls, err := tg.Linked()
		Expect(err).NotTo(HaveOccurred())
		return h.nodeOn(a, schemas, opts...), ls
	}

	It("frozen-link-stop: Stop with a 2s deadline on a frozen link returns in time; another member gets everything", func() {
		const total = 60
		ch, group := uniq("fault.frozen"), uniq("fault-frozen")
		first := &seqRecorder{work: 200 * time.Millisecond, honourCtx: true}
		second := &seqRecorder{}
		p1, ls := linked([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 4, Handler: first.handler("frozen")}}}})
		sendSpread(h.sender(), ch, total, 4)()
		Eventually(func() bool { return first.count() >= 4 && first.running.Load() >= 1 }, 30*time.Second).Should(BeTrue(),
			"handlers running on the member about to freeze")
		ls.Freeze()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		stopErr := p1.Stop(sctx)
		took := time.Since(start)
		cancel()
		ls.Kill() // the link dies: the broker sees the member gone
		h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 10, Handler: second.handler("second")}}}})
		runs := func() []processed { return append(first.all(), second.all()...) }
		progress := func() int { return len(runs()) }
		settle(func() bool { return distinctSeqs(runs()) >= total }, progress, claimWait, 60*time.Second)
		all := make([]int, total)
		for i := range all {
			all[i] = i
		}
		t := count(all, runs(), nil)
		t.print("frozen-link-stop", tg.Name, fmt.Sprintf("stop=%s deadline=2s stop-error=%v", took.Round(time.Millisecond), stopErr != nil))
		Expect(took).To(BeNumerically("<=", 2*time.Second+stopGrace), "Stop overran its deadline on a frozen link")
		Expect(t.lost).To(BeZero(), "messages held by the frozen member were never processed")
	})

	It("frozen-link-send: a send on a frozen link fails by its deadline", func() {
		ch := uniq("fault.frozen-send")
		snd, ls := linked(nil)
		Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: 0})).To(Succeed(), "a send before the freeze")
		ls.Freeze()
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := snd.SendToChannel(sctx, ch, faultPayload{Seq: 1})
		took := time.Since(start)
		cancel()
		report("fault frozen-link-send %s: send=%s deadline=1s error=%q", tg.Name, took.Round(time.Millisecond), errText(err))
		Expect(err).To(HaveOccurred(), "a send on a frozen link reported success")
		Expect(took).To(BeNumerically("<=", time.Second+stopGrace), "the send overran its deadline")
		ls.Kill()
		sctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		start = time.Now()
		_ = snd.Stop(sctx)
		Expect(time.Since(start)).To(BeNumerically("<=", 2*time.Second+stopGrace), "Stop of the sender overran its deadline")
	})

	It("link-reset-before-ack: a reset between a handler's return and its ack loses nothing", func() {
		const total, at = 20, 5
		ch, group := uniq("fault.reset"), uniq("fault-reset")
		r := &seqRecorder{}
		var ls *Links
		var froze atomic.Bool
		settled := make(chan struct{})
		var once sync.Once
		handler := r.handler("member")
		obs := channels.WithObserver(func(_ context.Context, e broker.Event) {
			if froze.Load() {
				once.Do(func() { close(settled) })
			}
		})
		snd := h.sender()
		_, links := linked([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 1,
			Handler: func(ctx context.Context, m *broker.Message) error {
				err := handler(ctx, m)
				var p faultPayload
				if m.Decode(&p) == nil && p.Seq == at && froze.CompareAndSwap(false, true) {
					ls.Freeze() // the handler returns into a frozen link: its ack cannot reach the broker
				}
				return err
			}}}}}, obs)
		ls = links
		for i := range total { // the messages after the frozen one are fetched, read ahead or queued
			Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: i})).To(Succeed())
		}
		Eventually(settled, 30*time.Second).Should(BeClosed(), "message %d ran and was settled into the frozen link", at)
		ls.ResetAll()
		ls.Heal()
		all := make([]int, total)
		for i := range all {
			all[i] = i
		}
		settle(func() bool { return distinctSeqs(r.all()) >= total }, r.count, claimWait, 60*time.Second)
		quietFor(r.count, tg.ClaimTime+time.Second, 10*time.Second) // a redelivery of the frozen ack's message, if any
		t := count(all, r.all(), nil)
		again := 0
		for _, run := range r.all() {
			if run.seq == at {
				again++
			}
		}
		t.print("link-reset-before-ack", tg.Name, fmt.Sprintf("runs-of-the-message-whose-ack-froze=%d", again))
		Expect(t.lost).To(BeZero())
	})

	It("slow-close-and-bandwidth: a member on a 32 KB/s link whose closes take 5s gets everything, and its Stop keeps its deadline", func() {
		const total = 40
		ch, group := uniq("fault.narrow"), uniq("fault-narrow")
		r := &seqRecorder{}
		p, ls := linked([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 4, Handler: r.handler("narrow")}}}})
		ls.Bandwidth(32)
		ls.SlowClose(5 * time.Second)
		pad := strings.Repeat("x", 2048)
		snd := h.sender()
		for i := range total {
			Expect(snd.SendToChannel(ctx, ch, faultPayloadPadded{Seq: i, Pad: pad})).To(Succeed())
		}
		all := make([]int, total)
		for i := range all {
			all[i] = i
		}
		settle(func() bool { return distinctSeqs(r.all()) >= total }, r.count, claimWait, 90*time.Second)
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		_ = p.Stop(sctx)
		took := time.Since(start)
		cancel()
		t := count(all, r.all(), nil)
		t.print("slow-close-and-bandwidth", tg.Name, fmt.Sprintf("stop=%s deadline=2s", took.Round(time.Millisecond)))
		Expect(t.lost).To(BeZero())
		Expect(took).To(BeNumerically("<=", 2*time.Second+stopGrace), "Stop overran its deadline")
	})

	It("latency-200ms: with 200ms on every packet the attempt rule and MaxInFlight hold", func() {
		const total, maxInFlight = 12, 3
		ch, group := uniq("fault.latency"), uniq("fault-latency")
		var mu sync.Mutex
		var runs []processed
		var running, maxSeen atomic.Int32
		var slow []any
		if tg.SlowLink != nil {
			slow = append(slow, tg.SlowLink...)
		}
		p, ls := linked([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {Group: group, MaxInFlight: maxInFlight, MaxRetries: 1,
			AdapterOptions: slow,
			Handler: func(ctx context.Context, m *broker.Message) error {
				n := running.Add(1)
				defer running.Add(-1)
				for {
					old := maxSeen.Load()
					if n <= old || maxSeen.CompareAndSwap(old, n) {
						break
					}
				}
				var pl faultPayload
				if err := m.Decode(&pl); err != nil {
					return err
				}
				if err := SimulateWork(context.WithoutCancel(ctx), 50*time.Millisecond); err != nil {
					return err
				}
				mu.Lock()
				runs = append(runs, processed{seq: pl.Seq, id: m.ID, attempt: m.Attempt})
				mu.Unlock()
				if pl.Seq%2 == 1 && m.Attempt == 1 {
					return errors.New("odd messages fail their first attempt")
				}
				return nil
			}}}}})
		_ = p
		ls.Latency(200 * time.Millisecond)
		snd := h.sender()
		for i := range total {
			Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: i})).To(Succeed())
		}
		all := func() []processed { mu.Lock(); defer mu.Unlock(); return append([]processed(nil), runs...) }
		succeeded := func() int {
			n := 0
			for _, r := range all() {
				if r.seq%2 == 0 || r.attempt >= 2 {
					n++
				}
			}
			return n
		}
		Eventually(succeeded, 90*time.Second).Should(BeNumerically(">=", total), func() string { return fmt.Sprint("runs: ", all()) })
		quietFor(func() int { return len(all()) }, tg.ClaimTime+time.Second, 10*time.Second)
		byAttempt := map[int]map[int]int{}
		for _, r := range all() {
			if byAttempt[r.seq] == nil {
				byAttempt[r.seq] = map[int]int{}
			}
			byAttempt[r.seq][r.attempt]++
		}
		seqs := make([]int, total)
		for i := range seqs {
			seqs[i] = i
		}
		var ok []processed // the runs that succeeded: a second is a duplicate
		for _, r := range all() {
			if r.seq%2 == 0 || r.attempt >= 2 {
				ok = append(ok, r)
			}
		}
		t := count(seqs, ok, nil)
		t.print("latency-200ms", tg.Name, fmt.Sprintf("max-in-flight=%d/%d", maxSeen.Load(), maxInFlight))
		Expect(maxSeen.Load()).To(BeNumerically("<=", maxInFlight), "MaxInFlight exceeded")
		for seq, at := range byAttempt {
			for a := range at {
				Expect(a).To(BeNumerically("<=", 2), "message %d ran as attempt %d with MaxRetries 1", seq, a)
			}
			if seq%2 == 1 {
				Expect(at).To(HaveKey(2), "message %d failed once and was never retried", seq)
			} else {
				Expect(at).NotTo(HaveKey(2), "message %d succeeded and ran again as a retry", seq)
			}
		}
		Expect(t.lost).To(BeZero())
	})
}

// faultPayloadPadded is a faultPayload with bulk (decoded as one).
type faultPayloadPadded struct {
	Seq int    `json:"seq"`
	Pad string `json:"pad"`
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
