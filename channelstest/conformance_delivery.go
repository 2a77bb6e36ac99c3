package channelstest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go-micro.dev/v4/metadata"
)

// deliverySpecs are the conformance specs of delivery and groups.
func deliverySpecs(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

	It("delivers a published message once, with its payload", func() {
		ch := uniq("test.simple.topic")
		rec := &Recorder{}
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.Handle)}}})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, user{ID: 1, Name: "John", Age: 25})).To(Succeed())
		Eventually(rec.Count).Should(Equal(1))
		Consistently(rec.Count).Should(Equal(1))
		m := rec.All()[0]
		Expect(decodeAll[user](rec.All())).To(Equal([]user{{1, "John", 25}}))
		Expect(m.Raw).NotTo(BeNil())
		Expect(m.ID).NotTo(BeEmpty())
		Expect(m.Attempt).To(Equal(1))
		Expect(m.Channel).To(Equal(ch))
		Expect(m.Group).To(Equal("sub"))
	})

	It("works with the MsgPack serializer", func() {
		ch := uniq("test.serializer.topic")
		rec := &Recorder{}
		mp := channels.WithSerializer(broker.MsgPack{})
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.Handle)}}}, mp)
		snd := h.sender(mp)
		Expect(snd.SendToChannel(ctx, ch, user{ID: 1, Name: "John", Age: 25})).To(Succeed())
		Eventually(rec.Count).Should(Equal(1))
		Expect(decodeAll[user](rec.All())).To(Equal([]user{{1, "John", 25}}))
	})

	It("keeps headers with the Raw serializer, dead letters included", func() {
		ch, dlq := uniq("test.rawser.topic"), uniq("RAW_DLQ")
		rec, dead := &Recorder{}, &Recorder{FailWith: nil}
		raw := channels.WithSerializer(channels.Raw{})
		h.node([]any{
			&Service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: channels.NoRetries,
				DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlq},
				Handler: func(ctx context.Context, m *broker.Message) error {
					_ = rec.Handle(ctx, m)
					return errors.New("to the dead letters")
				}}}},
			&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
		}, raw)
		snd := h.sender(raw)
		Expect(snd.SendToChannel(ctx, ch, []byte("bytes as they are"), channels.WithHeader("k", "v"))).To(Succeed())
		Eventually(dead.Count).Should(Equal(1))
		Expect(rec.All()[0].Headers).To(HaveKeyWithValue("k", "v"))
		d := dead.All()[0]
		Expect(string(d.Payload)).To(Equal("bytes as they are"))
		Expect(d.Headers).To(HaveKeyWithValue("k", "v"))
		Expect(d.Headers).To(HaveKeyWithValue("x-error-message", "to the dead letters"))
	})

	It("sends raw payloads and user headers as they are", func() {
		ch := uniq("test.raw.topic")
		rec := &Recorder{}
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.Handle)}}})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, []byte("plain bytes"), broker.WithRaw(),
			broker.WithHeaders(map[string]string{"k": "v", "trace": "abc"}))).To(Succeed())
		Eventually(rec.Count).Should(Equal(1))
		m := rec.All()[0]
		Expect(string(m.Payload)).To(Equal("plain bytes"))
		Expect(m.Headers).To(HaveKeyWithValue("k", "v"))
		Expect(m.Headers).To(HaveKeyWithValue("trace", "abc"))
	})

	Describe("context propagation", func() {
		It("carries metadata, request and parent ids, caller and the chain of parent channels", func() {
			first, second, third := uniq("test.simple.topic"), uniq("another.topic"), uniq("third.topic")
			var mu sync.Mutex
			infos := map[string]channels.CallInfo{}
			mds := map[string]metadata.Metadata{}
			sub := &Service{Name: "sub"}
			another := &Service{Name: "anotherSub"}
			third3 := &Service{Name: "thirdSub"}
			keep := func(key string, ctx context.Context) {
				ci, ok := channels.FromContext(ctx)
				Expect(ok).To(BeTrue())
				md, _ := metadata.FromContext(ctx)
				mu.Lock()
				infos[key] = *ci
				mds[key] = md
				mu.Unlock()
			}
			sub.Channels = channels.Channels{first: channels.On(func(ctx context.Context, m *broker.Message) error {
				keep("first", ctx)
				return sub.SendToChannel(ctx, second, map[string]int{"hop": 2})
			})}
			another.Channels = channels.Channels{second: channels.On(func(ctx context.Context, m *broker.Message) error {
				keep("second", ctx)
				return another.SendToChannel(ctx, third, map[string]int{"hop": 3})
			})}
			third3.Channels = channels.Channels{third: channels.On(func(ctx context.Context, m *broker.Message) error {
				keep("third", ctx)
				return nil
			})}
			h.node([]any{sub, another, third3})
			snd := h.sender()
			sendCtx := metadata.NewContext(ctx, metadata.Metadata{"Tenant": "acme"})
			sendCtx = channels.WithMeta(sendCtx, map[string]any{"a": 5.0, "b": map[string]any{"c": "Hello"}})
			Expect(snd.SendToChannel(sendCtx, first, map[string]int{"hop": 1})).To(Succeed())
			Eventually(func() int { mu.Lock(); defer mu.Unlock(); return len(infos) }).Should(Equal(3))
			mu.Lock()
			defer mu.Unlock()
			f, s, t := infos["first"], infos["second"], infos["third"]
			Expect(f.Channel).To(Equal(first))
			Expect(f.ParentChannel).To(BeEmpty())
			Expect(f.Caller).To(BeEmpty())
			Expect(s.Channel).To(Equal(second))
			Expect(s.ParentChannel).To(Equal(first))
			Expect(s.Caller).To(Equal("sub"))
			Expect(t.ParentChannel).To(Equal(second))
			Expect(t.Caller).To(Equal("anotherSub"))
			Expect(f.RequestID).NotTo(BeEmpty())
			Expect(s.RequestID).To(Equal(f.RequestID))
			Expect(t.RequestID).To(Equal(f.RequestID))
			Expect(s.ParentID).To(Equal(f.ID))
			Expect(t.ParentID).To(Equal(s.ID))
			Expect(t.Level).To(Equal(3))
			for _, ci := range []channels.CallInfo{f, s, t} {
				Expect(ci.Meta).To(HaveKeyWithValue("a", 5.0))
				Expect(ci.Meta).To(HaveKeyWithValue("b", map[string]any{"c": "Hello"}))
				Expect(ci.Meta).To(HaveKeyWithValue("Tenant", "acme"))
			}
			for _, md := range mds {
				v, ok := md.Get("Tenant")
				Expect(ok).To(BeTrue())
				Expect(v).To(Equal("acme"))
			}
		})
	})

	It("delivers to every group that subscribes a channel", func() {
		t1, t2 := uniq("test.topic1"), uniq("test.topic2")
		r11, r12, r21, r22 := &Recorder{}, &Recorder{}, &Recorder{}, &Recorder{}
		h.node([]any{
			&Service{Name: "sub1", Channels: channels.Channels{t1: channels.On(r11.Handle), t2: channels.On(r12.Handle)}},
			&Service{Name: "sub2", Channels: channels.Channels{t1: channels.On(r21.Handle), t2: channels.On(r22.Handle)}},
		})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, t1, user{ID: 1})).To(Succeed())
		Eventually(func() []int { return []int{r11.Count(), r21.Count()} }).Should(Equal([]int{1, 1}))
		Consistently(func() []int { return []int{r11.Count(), r21.Count(), r12.Count(), r22.Count()} }).Should(Equal([]int{1, 1, 0, 0}))
		Expect(snd.SendToChannel(ctx, t2, user{ID: 2, Name: "Jane", Age: 22})).To(Succeed())
		Eventually(func() []int { return []int{r12.Count(), r22.Count()} }).Should(Equal([]int{1, 1}))
		Expect(decodeAll[user](r22.All())).To(Equal([]user{{2, "Jane", 22}}))
	})

	It("balances a group between its members, each message once", func() {
		ch, group := uniq("test.balanced.topic"), uniq("mygroup")
		recs := []*Recorder{{}, {}, {}}
		for i, r := range recs {
			slow := func(ctx context.Context, m *broker.Message) error {
				if err := SimulateWork(ctx, 5*time.Millisecond); err != nil { // so the load spreads
					return err
				}
				return r.Handle(ctx, m)
			}
			h.node([]any{&Service{Name: fmt.Sprintf("sub%d", i+1), Channels: channels.Channels{ch: {Group: group, Handler: slow}}}})
		}
		snd := h.sender()
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
			}()
		}
		wg.Wait()
		total := func() int { return recs[0].Count() + recs[1].Count() + recs[2].Count() }
		Eventually(total).Should(Equal(20))
		Consistently(total).Should(Equal(20))
		ids := map[int]bool{}
		for _, r := range recs {
			Expect(r.Count()).To(BeNumerically(">=", 1), "every member gets a share")
			for _, u := range decodeAll[user](r.All()) {
				ids[u.ID] = true
			}
		}
		Expect(ids).To(HaveLen(20))
	})

	It("redelivers a failed message to another member of its group", func() {
		ch, group := uniq("test.unstable.topic"), uniq("mygroup")
		bad, good := &Recorder{FailWith: errors.New("Something happened")}, &Recorder{}
		// The failing member is alone first, so every message fails at least once there.
		h.node([]any{&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: 100, MaxInFlight: 6, Handler: bad.Handle}}}})
		snd := h.sender()
		for i := range 6 {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		Eventually(func() int { return len(slicesCompact(idsOf(bad))) }).Should(Equal(6))
		h.node([]any{&Service{Name: "sub2", Channels: channels.Channels{ch: {Group: group, MaxRetries: 100, Handler: good.Handle}}}})
		Eventually(func() []int {
			var ids []int
			for _, u := range decodeAll[user](good.All()) {
				ids = append(ids, u.ID)
			}
			sort.Ints(ids)
			return slicesCompact(ids)
		}).Should(Equal([]int{0, 1, 2, 3, 4, 5}))
	})

	It("keeps a durable group's backlog while its consumers are down", func() {
		ch, group := uniq("test.delayed.connection.topic"), uniq("mygroup")
		snd := h.sender()
		first := &Recorder{}
		p1 := h.node([]any{&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 6, Handler: first.Handle}}}})
		Expect(snd.SendToChannel(ctx, ch, user{ID: 0})).To(Succeed())
		Eventually(first.Count).Should(Equal(1))
		Expect(p1.Stop(ctx)).To(Succeed())

		for i := 1; i <= 6; i++ {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		second := &Recorder{}
		p2 := h.node([]any{&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 6, Handler: second.Handle}}}})
		Eventually(second.Count).Should(Equal(6))
		Consistently(second.Count).Should(Equal(6))
		Expect(idsOf(second)).To(Equal([]int{1, 2, 3, 4, 5, 6}))
		Expect(p2.Stop(ctx)).To(Succeed())

		for i := 7; i <= 12; i++ {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		third := &Recorder{}
		h.node([]any{&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 6, Handler: third.Handle}}}})
		Eventually(third.Count).Should(Equal(6))
		Consistently(third.Count).Should(Equal(6))
		Expect(idsOf(third)).To(Equal([]int{7, 8, 9, 10, 11, 12}))
		Expect(first.Count()).To(Equal(1))
	})

}
