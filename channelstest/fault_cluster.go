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

// clusterResume bounds how long consumption may stop after a node is lost.
const clusterResume = 30 * time.Second

// traffic is a paced producer of faultPayload messages: it records the
// sequence numbers of the sends that returned nil and counts the others.
type traffic struct {
	mu       sync.Mutex
	accepted []int
	errs     atomic.Int32
	stop     chan struct{}
	stopped  chan struct{}
}

// startTraffic sends to ch through snd every 5 ms, each send bounded by 2 s,
// until halt; sequence numbers start at base.
func startTraffic(ctx context.Context, snd *channels.Plugin, ch string, base int) *traffic {
	tr := &traffic{stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer GinkgoRecover()
		defer close(tr.stopped)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := base; ; i++ {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := snd.SendToChannel(sctx, ch, faultPayload{Seq: i})
			cancel()
			if err != nil {
				tr.errs.Add(1)
				continue
			}
			tr.mu.Lock()
			tr.accepted = append(tr.accepted, i)
			tr.mu.Unlock()
		}
	}()
	return tr
}

func (tr *traffic) sent() []int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]int(nil), tr.accepted...)
}

func (tr *traffic) halt() {
	close(tr.stop)
	<-tr.stopped
}

// clusters declares the cluster scenarios: a node killed, every node
// restarted in turn, a node cut off from the others, each under traffic.
func (s *faultSuite) clusters() {
	tg, ctx, claimWait := s.tg, s.ctx, s.claimWait
	c := tg.Cluster
	on := c != nil && c.Nodes > 1

	// finish stops the traffic, waits for what is missing (or for quiet),
	// prints the scenario's line and checks that nothing accepted was lost
	// (reported only, on a lossy target).
	finish := func(scenario string, r *seqRecorder, details string, trs ...*traffic) {
		var sent []int
		errs := int32(0)
		for _, tr := range trs {
			tr.halt()
			sent = append(sent, tr.sent()...)
			errs += tr.errs.Load()
		}
		settle(func() bool { return count(sent, r.all(), nil).lost == 0 }, r.count, claimWait+10*time.Second, 90*time.Second)
		quietFor(r.count, claimWait, 20*time.Second)
		t := count(sent, r.all(), nil)
		t.print(scenario, tg.Name, fmt.Sprintf("send-errors=%d %s", errs, details))
		if c.Lossy {
			if t.lost > 0 {
				GinkgoWriter.Printf("%s on %s: %d accepted sends lost (asynchronous replication, the documented trade-off)\n", scenario, tg.Name, t.lost)
			}
		} else {
			Expect(t.lost).To(BeZero(), "accepted sends never processed")
		}
	}
	consumer := func(ch string) *seqRecorder {
		r := &seqRecorder{}
		s.h.node([]any{&Service{Name: "fault", Channels: channels.Channels{ch: {MaxInFlight: 10, Handler: r.handler("consumer")}}}})
		return r
	}
	// resumes waits until n more runs were recorded after the moment of
	// since and returns how long it took.
	resumes := func(r *seqRecorder, since time.Time, what string) time.Duration {
		GinkgoHelper()
		base := r.count()
		Eventually(r.count, clusterResume+30*time.Second).Should(BeNumerically(">=", base+50), what)
		return time.Since(since)
	}

	itIf(on, "node-kill: the node leading the channel is killed under traffic; every accepted send is processed", Label("cluster"), func() {
		ch := uniq("fault.nodekill")
		r := consumer(ch)
		tr := startTraffic(ctx, s.h.sender(), ch, 0)
		Eventually(r.count, 30*time.Second).Should(BeNumerically(">=", 200))
		leader, err := c.Leader(ctx, ch)
		Expect(err).NotTo(HaveOccurred())
		killed := time.Now()
		Expect(c.Kill(ctx, leader)).To(Succeed())
		resumed := resumes(r, killed, "consuming resumes after the leader is killed")
		Expect(resumed).To(BeNumerically("<=", clusterResume), "consuming resumed late")
		Expect(c.Start(ctx, leader)).To(Succeed())
		finish("node-kill", r, fmt.Sprintf("killed-node=%d resumed-after=%s", leader, resumed.Round(100*time.Millisecond)), tr)
	})

	itIf(on, "rolling-restart: every node restarts in turn under traffic; nothing is lost, no member stays stuck", Label("cluster"), func() {
		ch := uniq("fault.rolling")
		r := consumer(ch)
		tr := startTraffic(ctx, s.h.sender(), ch, 0)
		Eventually(r.count, 30*time.Second).Should(BeNumerically(">=", 200))
		var slowest time.Duration
		for i := range c.Nodes {
			at := time.Now()
			Expect(c.Kill(ctx, i)).To(Succeed())
			Expect(c.Start(ctx, i)).To(Succeed())
			slowest = max(slowest, resumes(r, at, fmt.Sprintf("consuming goes on after node %d restarted", i)))
		}
		finish("rolling-restart", r, fmt.Sprintf("nodes=%d slowest-resume=%s", c.Nodes, slowest.Round(100*time.Millisecond)), tr)
	})

	itIf(on && c.Isolate != nil && c.NewAdapterOn != nil, "minority-partitioned: sends through a node cut off from the others fail or are kept, never accepted and lost", Label("cluster"), func() {
		ch := uniq("fault.minority")
		r := consumer(ch)
		warm := startTraffic(ctx, s.h.sender(), ch, 0)
		Eventually(r.count, 30*time.Second).Should(BeNumerically(">=", 100))
		leader, err := c.Leader(ctx, ch)
		Expect(err).NotTo(HaveOccurred())
		a, err := c.NewAdapterOn(leader)
		Expect(err).NotTo(HaveOccurred())
		// The sends through the node that will be cut off.
		through := startTraffic(ctx, s.h.nodeOn(a, nil), ch, 1_000_000)
		Eventually(func() int { return len(through.sent()) }, 20*time.Second).Should(BeNumerically(">=", 50))
		Expect(c.Isolate(ctx, leader)).To(Succeed())
		isolated, before := time.Now(), through.errs.Load()
		acceptedBefore := len(through.sent())
		healed := false
		defer func() {
			if !healed {
				_ = c.Heal(context.Background(), leader)
			}
		}()
		// The majority goes on (a new leader, sends through the other
		// nodes, consumption) while the node is cut off for 10 s.
		resumed := resumes(r, isolated, "consuming goes on while a node is cut off")
		Eventually(func() bool { return time.Since(isolated) > 10*time.Second }, 20*time.Second).Should(BeTrue())
		refused, accepted := through.errs.Load()-before, len(through.sent())-acceptedBefore
		Expect(c.Heal(ctx, leader)).To(Succeed())
		healed = true
		finish("minority-partitioned", r, fmt.Sprintf("isolated-node=%d while-isolated: accepted-through-it=%d refused=%d resumed-after=%s",
			leader, accepted, refused, resumed.Round(100*time.Millisecond)), warm, through)
	})
}
