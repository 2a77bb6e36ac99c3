package channelstest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/dlq"
)

// toolingSpecs are the conformance specs of the operations abilities
// (broker.DeadLetterStore, Tailer, ChannelLister, MessageRemover) as
// package dlq uses them. A target whose adapter lacks an ability gets,
// in place of that ability's specs, one asserting broker.ErrUnsupported.
func toolingSpecs(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

	// ops is an operator's adapter on the target's broker, connected, that
	// removes what the spec names when it ends.
	ops := func(names ...*string) broker.Adapter {
		GinkgoHelper()
		a, err := tg.NewAdapter()
		Expect(err).NotTo(HaveOccurred())
		Expect(a.Connect(ctx, broker.Env{NodeID: "ops"})).To(Succeed())
		DeferCleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if r, ok := a.(broker.ChannelRemover); ok {
				for _, n := range names {
					_ = r.RemoveChannel(cctx, *n)
				}
			}
			_ = a.Close(cctx)
		})
		return a
	}
	expectUnsupported := func(err error) {
		GinkgoHelper()
		Expect(err).To(MatchError(broker.ErrUnsupported))
	}

	// failing starts a node whose channel ch (group group) fails every
	// message with "bad user <id>" until fixed, with no retries and
	// dead letters to queue; it returns the recorder of the runs that
	// succeeded.
	failing := func(ch, group, queue string, fixed *atomic.Bool) *Recorder {
		GinkgoHelper()
		ok := &Recorder{}
		h.node([]any{&Service{Name: "billing", Channels: channels.Channels{ch: {Group: group, MaxRetries: channels.NoRetries,
			DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: queue},
			Handler: channels.Typed(func(ctx context.Context, u user, m *channels.Message) error {
				if !fixed.Load() {
					return fmt.Errorf("bad user %d", u.ID)
				}
				return ok.Handle(ctx, m)
			})}}}})
		return ok
	}
	// deadLetters sends users 1..n to ch and waits until dlq.List sees as
	// many dead letters in queue: an operator's browse started after they
	// were written.
	deadLetters := func(a broker.Adapter, ch, queue string, n int) []dlq.Entry {
		GinkgoHelper()
		snd := h.sender()
		for i := 1; i <= n; i++ {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i, Name: "u"}, broker.WithHeader("user-header", "kept"))).To(Succeed())
		}
		var es []dlq.Entry
		Eventually(func() ([]dlq.Entry, error) {
			var err error
			es, err = dlq.List(ctx, a, queue, dlq.Filter{})
			return es, err
		}).Should(HaveLen(n))
		return es
	}

	Describe("dead-letter store", func() {
		It("lists the dead letters written before it started, with their origin and error, and purges only those a filter matches", func() {
			ch, group, queue := uniq("test.ops.list"), uniq("grp"), uniq("DLQ")
			a := ops(&ch, &queue)
			if _, ok := a.(broker.DeadLetterStore); !ok {
				_, err := dlq.List(ctx, a, queue, dlq.Filter{})
				expectUnsupported(err)
				_, err = dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{})
				expectUnsupported(err)
				_, err = dlq.Purge(ctx, a, queue, dlq.Filter{})
				expectUnsupported(err)
				return
			}
			var fixed atomic.Bool
			failing(ch, group, queue, &fixed)
			es := deadLetters(a, ch, queue, 3)
			var ids []int
			for _, e := range es {
				Expect(e.ID).NotTo(BeEmpty())
				Expect(e.OriginalChannel).To(Equal(ch))
				Expect(e.OriginalGroup).To(Equal(group))
				Expect(e.ErrorName).To(Equal("Error"))
				Expect(e.ErrorMessage).To(HavePrefix("bad user "))
				Expect(e.Attempts).To(Equal(1))
				Expect(e.Time).To(BeTemporally("~", time.Now(), time.Minute))
				Expect(e.Headers).To(HaveKeyWithValue("user-header", "kept"))
				var u user
				Expect(broker.JSON{}.Unmarshal(e.Payload, &u)).To(Succeed())
				Expect(e.ErrorMessage).To(Equal(fmt.Sprintf("bad user %d", u.ID)))
				ids = append(ids, u.ID)
			}
			Expect(ids).To(ConsistOf(1, 2, 3))

			// Reading took nothing; filters select.
			Expect(dlq.List(ctx, a, queue, dlq.Filter{})).To(HaveLen(3))
			Expect(dlq.List(ctx, a, queue, dlq.Filter{Channel: ch + ".other"})).To(BeEmpty())
			Expect(dlq.List(ctx, a, queue, dlq.Filter{Limit: 2})).To(HaveLen(2))
			Expect(dlq.List(ctx, a, queue, dlq.Filter{IDs: []string{es[1].ID}})).To(ConsistOf(HaveField("ID", es[1].ID)))

			n, err := dlq.Purge(ctx, a, queue, dlq.Filter{ErrorContains: "BAD USER 2"})
			Expect(err).NotTo(HaveOccurred())
			Expect(n).To(Equal(1))
			left, err := dlq.List(ctx, a, queue, dlq.Filter{})
			Expect(err).NotTo(HaveOccurred())
			Expect(left).To(HaveLen(2))
			for _, e := range left {
				Expect(e.ErrorMessage).NotTo(Equal("bad user 2"))
			}
		})

		It("replays each dead letter as a first attempt and removes it; a dry run changes nothing", func() {
			ch, group, queue := uniq("test.ops.replay"), uniq("grp"), uniq("DLQ")
			a := ops(&ch, &queue)
			if _, ok := a.(broker.DeadLetterStore); !ok {
				_, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{DryRun: true})
				expectUnsupported(err)
				return
			}
			var fixed atomic.Bool
			ok := failing(ch, group, queue, &fixed)
			es := deadLetters(a, ch, queue, 3)

			dry, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{DryRun: true})
			Expect(err).NotTo(HaveOccurred())
			Expect(dry.Entries).To(HaveLen(3))
			Expect(dry.Sent).To(BeZero())
			fixed.Store(true)
			Consistently(ok.Count).Should(BeZero())
			Expect(dlq.List(ctx, a, queue, dlq.Filter{})).To(HaveLen(3))

			res, err := dlq.Replay(ctx, a, queue, dlq.Filter{}, dlq.ReplayOptions{})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Sent).To(Equal(3))
			Expect(res.Removed).To(Equal(3))
			Eventually(ok.Count).Should(Equal(3))
			Expect(idsOf(ok)).To(Equal([]int{1, 2, 3}))
			byID := map[string]bool{}
			for _, e := range es {
				byID[e.ID] = true
			}
			for _, m := range ok.All() {
				Expect(m.Attempt).To(Equal(1))
				for k := range m.Headers {
					Expect(strings.HasPrefix(k, "x-error-")).To(BeFalse(), "header %s", k)
					Expect(strings.HasPrefix(k, "x-original-")).To(BeFalse(), "header %s", k)
				}
				Expect(m.Headers).To(HaveKeyWithValue("user-header", "kept"))
				trail := dlq.ParseTrail(m.Headers[dlq.HeaderReplayedFrom])
				Expect(trail).To(HaveLen(1))
				Expect(trail[0].Queue).To(Equal(queue))
				Expect(byID).To(HaveKey(trail[0].ID))
				Expect(trail[0].Error).To(HavePrefix("Error: bad user "))
			}
			Eventually(func() ([]dlq.Entry, error) { return dlq.List(ctx, a, queue, dlq.Filter{}) }).Should(BeEmpty())
			Consistently(ok.Count).Should(Equal(3))
		})
	})

	Describe("message remover", func() {
		It("removes one stored message by the ID the dead-letter store gives", func() {
			ch, group, queue := uniq("test.ops.rm"), uniq("grp"), uniq("DLQ")
			a := ops(&ch, &queue)
			if _, ok := a.(broker.MessageRemover); !ok {
				expectUnsupported(dlq.RemoveMessage(ctx, a, queue, "1"))
				return
			}
			if _, ok := a.(broker.DeadLetterStore); !ok {
				return // no way to learn an ID: covered by the adapter's own tests
			}
			var fixed atomic.Bool
			failing(ch, group, queue, &fixed)
			es := deadLetters(a, ch, queue, 2)
			Expect(dlq.RemoveMessage(ctx, a, queue, es[0].ID)).To(Succeed())
			Expect(dlq.List(ctx, a, queue, dlq.Filter{})).To(ConsistOf(HaveField("ID", es[1].ID)))
			Expect(dlq.RemoveMessage(ctx, a, queue, es[0].ID)).To(MatchError(broker.ErrNotFound))
		})
	})

	Describe("tail", func() {
		It("sees a message sent after it started and takes nothing from the group", func() {
			ch, group := uniq("test.ops.tail"), uniq("grp")
			a := ops(&ch)
			if _, ok := a.(broker.Tailer); !ok {
				expectUnsupported(dlq.Tail(ctx, a, ch, func(*broker.StoredMessage) bool { return false }))
				return
			}
			rec := &Recorder{}
			h.node([]any{&Service{Name: "shipping", Channels: channels.Channels{ch: {Group: group, Handler: rec.Handle}}}})
			snd := h.sender()
			tctx, cancel := context.WithCancel(ctx)
			defer cancel()
			seen := make(chan *broker.StoredMessage, 1)
			done := make(chan error, 1)
			go func() {
				defer GinkgoRecover()
				done <- dlq.Tail(tctx, a, ch, func(m *broker.StoredMessage) bool {
					seen <- m
					return false
				})
			}()
			// The tail starts on its own time: send until it sees one.
			var got *broker.StoredMessage
			sent := 0
			Eventually(func() bool {
				sent++
				Expect(snd.SendToChannel(ctx, ch, user{ID: sent})).To(Succeed())
				select {
				case got = <-seen:
					return true
				case <-time.After(50 * time.Millisecond):
					return false
				}
			}).WithPolling(time.Millisecond).Should(BeTrue())
			Eventually(done).Should(Receive(BeNil()))
			Expect(got.Channel).To(Equal(ch))
			Expect(got.ID).NotTo(BeEmpty())
			var u user
			Expect(broker.JSON{}.Unmarshal(got.Payload, &u)).To(Succeed())
			Expect(u.ID).To(BeNumerically(">=", 1))
			// The group got every message, the tailed one included.
			Eventually(rec.Count).Should(Equal(sent))
			Consistently(rec.Count).Should(Equal(sent))
		})
	})

	Describe("channel lister", func() {
		It("lists the namespace's channels with their groups", func() {
			ns, group := uniq("opsns"), uniq("grp")
			ns = strings.ReplaceAll(ns, ".", "-")
			full := ns + ".orders"
			a := ops(&full)
			if _, ok := a.(broker.ChannelLister); !ok {
				_, err := dlq.Channels(ctx, a, ns)
				expectUnsupported(err)
				return
			}
			rec := &Recorder{}
			h.node([]any{&Service{Name: "shipping", Channels: channels.Channels{"orders": {Group: group, Handler: rec.Handle}}}},
				channels.WithNamespace(ns))
			Expect(h.sender(channels.WithNamespace(ns)).SendToChannel(ctx, "orders", user{ID: 1})).To(Succeed())
			Eventually(rec.Count).Should(Equal(1))
			Eventually(func() ([]broker.ChannelInfo, error) { return dlq.Channels(ctx, a, ns) }).Should(
				ContainElement(And(HaveField("Name", full), HaveField("Groups", ContainElement(HaveField("Name", group))))))
			cs, err := dlq.Channels(ctx, a, ns)
			Expect(err).NotTo(HaveOccurred())
			for _, c := range cs {
				Expect(c.Name).To(HavePrefix(ns + "."))
			}
		})
	})
}
