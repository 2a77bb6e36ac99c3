package channelstest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go-micro.dev/v4/metadata"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
)

type user struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	Age  int    `json:"age"`
}

func conformance(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

	It("delivers a published message once, with its payload", func() {
		ch := uniq("test.simple.topic")
		rec := &recorder{}
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.handle)}}})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, user{ID: 1, Name: "John", Age: 25})).To(Succeed())
		Eventually(rec.count).Should(Equal(1))
		Consistently(rec.count).Should(Equal(1))
		m := rec.all()[0]
		Expect(decodeAll[user](rec.all())).To(Equal([]user{{1, "John", 25}}))
		Expect(m.Raw).NotTo(BeNil())
		Expect(m.ID).NotTo(BeEmpty())
		Expect(m.Attempt).To(Equal(1))
		Expect(m.Channel).To(Equal(ch))
		Expect(m.Group).To(Equal("sub"))
	})

	It("works with the MsgPack serializer", func() {
		ch := uniq("test.serializer.topic")
		rec := &recorder{}
		mp := channels.WithSerializer(broker.MsgPack{})
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.handle)}}}, mp)
		snd := h.sender(mp)
		Expect(snd.SendToChannel(ctx, ch, user{ID: 1, Name: "John", Age: 25})).To(Succeed())
		Eventually(rec.count).Should(Equal(1))
		Expect(decodeAll[user](rec.all())).To(Equal([]user{{1, "John", 25}}))
	})

	It("keeps headers with the Raw serializer, dead letters included", func() {
		ch, dlq := uniq("test.rawser.topic"), uniq("RAW_DLQ")
		rec, dead := &recorder{}, &recorder{failWith: nil}
		raw := channels.WithSerializer(channels.Raw{})
		h.node([]any{
			&service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: channels.NoRetries,
				DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlq},
				Handler: func(ctx context.Context, m *broker.Message) error {
					_ = rec.handle(ctx, m)
					return errors.New("to the dead letters")
				}}}},
			&service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}},
		}, raw)
		snd := h.sender(raw)
		Expect(snd.SendToChannel(ctx, ch, []byte("bytes as they are"), channels.WithHeader("k", "v"))).To(Succeed())
		Eventually(dead.count).Should(Equal(1))
		Expect(rec.all()[0].Headers).To(HaveKeyWithValue("k", "v"))
		d := dead.all()[0]
		Expect(string(d.Payload)).To(Equal("bytes as they are"))
		Expect(d.Headers).To(HaveKeyWithValue("k", "v"))
		Expect(d.Headers).To(HaveKeyWithValue("x-error-message", "to the dead letters"))
	})

	It("sends raw payloads and user headers as they are", func() {
		ch := uniq("test.raw.topic")
		rec := &recorder{}
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.handle)}}})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, []byte("plain bytes"), broker.WithRaw(),
			broker.WithHeaders(map[string]string{"k": "v", "trace": "abc"}))).To(Succeed())
		Eventually(rec.count).Should(Equal(1))
		m := rec.all()[0]
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
			sub := &service{Name: "sub"}
			another := &service{Name: "anotherSub"}
			third3 := &service{Name: "thirdSub"}
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
		r11, r12, r21, r22 := &recorder{}, &recorder{}, &recorder{}, &recorder{}
		h.node([]any{
			&service{Name: "sub1", Channels: channels.Channels{t1: channels.On(r11.handle), t2: channels.On(r12.handle)}},
			&service{Name: "sub2", Channels: channels.Channels{t1: channels.On(r21.handle), t2: channels.On(r22.handle)}},
		})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, t1, user{ID: 1})).To(Succeed())
		Eventually(func() []int { return []int{r11.count(), r21.count()} }).Should(Equal([]int{1, 1}))
		Consistently(func() []int { return []int{r11.count(), r21.count(), r12.count(), r22.count()} }).Should(Equal([]int{1, 1, 0, 0}))
		Expect(snd.SendToChannel(ctx, t2, user{ID: 2, Name: "Jane", Age: 22})).To(Succeed())
		Eventually(func() []int { return []int{r12.count(), r22.count()} }).Should(Equal([]int{1, 1}))
		Expect(decodeAll[user](r22.all())).To(Equal([]user{{2, "Jane", 22}}))
	})

	It("balances a group between its members, each message once", func() {
		ch, group := uniq("test.balanced.topic"), uniq("mygroup")
		recs := []*recorder{{}, {}, {}}
		for i, r := range recs {
			slow := func(ctx context.Context, m *broker.Message) error {
				if err := simulateWork(ctx, 5*time.Millisecond); err != nil { // so the load spreads
					return err
				}
				return r.handle(ctx, m)
			}
			h.node([]any{&service{Name: fmt.Sprintf("sub%d", i+1), Channels: channels.Channels{ch: {Group: group, Handler: slow}}}})
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
		total := func() int { return recs[0].count() + recs[1].count() + recs[2].count() }
		Eventually(total).Should(Equal(20))
		Consistently(total).Should(Equal(20))
		ids := map[int]bool{}
		for _, r := range recs {
			Expect(r.count()).To(BeNumerically(">=", 1), "every member gets a share")
			for _, u := range decodeAll[user](r.all()) {
				ids[u.ID] = true
			}
		}
		Expect(ids).To(HaveLen(20))
	})

	It("redelivers a failed message to another member of its group", func() {
		ch, group := uniq("test.unstable.topic"), uniq("mygroup")
		bad, good := &recorder{failWith: errors.New("Something happened")}, &recorder{}
		// The failing member is alone first, so every message fails at least once there.
		h.node([]any{&service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: 100, MaxInFlight: 6, Handler: bad.handle}}}})
		snd := h.sender()
		for i := range 6 {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		Eventually(func() int { return len(slicesCompact(idsOf(bad))) }).Should(Equal(6))
		h.node([]any{&service{Name: "sub2", Channels: channels.Channels{ch: {Group: group, MaxRetries: 100, Handler: good.handle}}}})
		Eventually(func() []int {
			var ids []int
			for _, u := range decodeAll[user](good.all()) {
				ids = append(ids, u.ID)
			}
			sort.Ints(ids)
			return slicesCompact(ids)
		}).Should(Equal([]int{0, 1, 2, 3, 4, 5}))
	})

	It("keeps a durable group's backlog while its consumers are down", func() {
		ch, group := uniq("test.delayed.connection.topic"), uniq("mygroup")
		snd := h.sender()
		first := &recorder{}
		p1 := h.node([]any{&service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 6, Handler: first.handle}}}})
		Expect(snd.SendToChannel(ctx, ch, user{ID: 0})).To(Succeed())
		Eventually(first.count).Should(Equal(1))
		Expect(p1.Stop(ctx)).To(Succeed())

		for i := 1; i <= 6; i++ {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		second := &recorder{}
		p2 := h.node([]any{&service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 6, Handler: second.handle}}}})
		Eventually(second.count).Should(Equal(6))
		Consistently(second.count).Should(Equal(6))
		Expect(idsOf(second)).To(Equal([]int{1, 2, 3, 4, 5, 6}))
		Expect(p2.Stop(ctx)).To(Succeed())

		for i := 7; i <= 12; i++ {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		third := &recorder{}
		h.node([]any{&service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 6, Handler: third.handle}}}})
		Eventually(third.count).Should(Equal(6))
		Consistently(third.count).Should(Equal(6))
		Expect(idsOf(third)).To(Equal([]int{7, 8, 9, 10, 11, 12}))
		Expect(first.count()).To(Equal(1))
	})

	It("retries only inside the failing group, MaxRetries redeliveries after the first attempt", func() {
		ch := uniq("test.fail.topic")
		bad, good := &recorder{failWith: errors.New("Something happened")}, &recorder{}
		h.node([]any{
			&service{Name: "sub1", Channels: channels.Channels{ch: {MaxRetries: 5, Handler: bad.handle}}},
			&service{Name: "sub2", Channels: channels.Channels{ch: {MaxRetries: 5, Handler: good.handle}}},
		})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, map[string]int{"test": 1})).To(Succeed())
		Eventually(bad.count).Should(Equal(6))
		Consistently(bad.count).Should(Equal(6))
		Expect(good.count()).To(Equal(1))
		var attempts []int
		for _, m := range bad.all() {
			attempts = append(attempts, m.Attempt)
		}
		Expect(attempts).To(Equal([]int{1, 2, 3, 4, 5, 6}))
	})

	It("waits the backoff between attempts", func() {
		ch := uniq("test.backoff.topic")
		var mu sync.Mutex
		var at []time.Time
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 2,
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
		var failedOnce atomic.Bool
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 1,
			Backoff: broker.ConstantBackoff(3 * time.Second),
			Handler: func(ctx context.Context, m *broker.Message) error {
				var u user
				Expect(m.Decode(&u)).To(Succeed())
				if u.ID == 0 && failedOnce.CompareAndSwap(false, true) {
					return errors.New("first one fails once")
				}
				okCount.Add(1)
				return nil
			}}}}})
		snd := h.sender()
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
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 2,
			Handler: func(ctx context.Context, m *broker.Message) error {
				var i int
				Expect(m.Decode(&i)).To(Succeed())
				if err := simulateWork(ctx, 5*time.Millisecond); err != nil {
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

	It("processes one message at a time, in order, with MaxInFlight 1", func() {
		ch := uniq("test.mif.topic")
		var mu sync.Mutex
		var flow []string
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 1, AdapterOptions: tg.Ordered,
			Handler: func(ctx context.Context, m *broker.Message) error {
				var u user
				Expect(m.Decode(&u)).To(Succeed())
				mu.Lock()
				flow = append(flow, fmt.Sprintf("BEGIN: %d", u.ID))
				mu.Unlock()
				if err := simulateWork(ctx, 50*time.Millisecond); err != nil {
					return err
				}
				mu.Lock()
				flow = append(flow, fmt.Sprintf("END: %d", u.ID))
				mu.Unlock()
				return nil
			}}}}})
		snd := h.sender()
		for i := range 5 {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		var want []string
		for i := range 5 {
			want = append(want, fmt.Sprintf("BEGIN: %d", i), fmt.Sprintf("END: %d", i))
		}
		Eventually(func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), flow...) }).Should(Equal(want))
	})

	It("never runs more than MaxInFlight handlers of a channel at once, and reaches it", func() {
		ch := uniq("test.mif4.topic")
		rec := &recorder{work: 30 * time.Millisecond}
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 4, Handler: rec.handle}}}})
		snd := h.sender()
		for i := range 24 {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		Eventually(rec.count).Should(Equal(24))
		Expect(rec.maxSeen.Load()).To(BeEquivalentTo(4))
	})

	It("isolates namespaces", func() {
		topic := uniq("test.ns.topic")
		r1, r2, r3, r4 := &recorder{}, &recorder{}, &recorder{}, &recorder{}
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{topic: channels.On(r1.handle)}}})
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{topic: channels.On(r2.handle)}}}, channels.WithNamespace("A"))
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{topic: channels.On(r3.handle)}}}, channels.WithNamespace("B"))
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{topic: {Group: "other", Handler: r4.handle}}}})
		plain, a := h.sender(), h.sender(channels.WithNamespace("A"))
		Expect(plain.SendToChannel(ctx, topic, 1)).To(Succeed())
		Expect(plain.SendToChannel(ctx, topic, 2)).To(Succeed())
		Eventually(func() []int { return []int{r1.count(), r4.count()} }).Should(Equal([]int{2, 2}))
		Expect(a.SendToChannel(ctx, topic, 3)).To(Succeed())
		Eventually(r2.count).Should(Equal(1))
		Consistently(func() []int { return []int{r1.count(), r2.count(), r3.count(), r4.count()} }).Should(Equal([]int{2, 1, 0, 2}))
		Expect(r2.all()[0].Channel).To(Equal("A." + topic))
	})

	Describe("dead-lettering", func() {
		expectDLQHeaders := func(m *broker.Message, ch, group string, redelivered int) {
			GinkgoHelper()
			Expect(m.Headers).To(HaveKeyWithValue("x-error-message", "Something happened"))
			Expect(m.Headers).To(HaveKeyWithValue("x-error-name", "Error"))
			Expect(m.Headers).To(HaveKeyWithValue("x-original-channel", ch))
			Expect(m.Headers).To(HaveKeyWithValue("x-original-group", group))
			Expect(m.Headers).To(HaveKeyWithValue("x-redelivered-count", strconv.Itoa(redelivered)))
			Expect(m.Headers).To(HaveKey("x-original-id"))
			Expect(m.Headers["x-original-id"]).NotTo(BeEmpty())
			Expect(m.Headers).To(HaveKeyWithValue("user-header", "kept"))
			ts, err := strconv.ParseInt(m.Headers["x-error-timestamp"], 10, 64)
			Expect(err).NotTo(HaveOccurred())
			Expect(time.UnixMilli(ts)).To(BeTemporally("~", time.Now(), time.Minute))
			stack, err := base64.StdEncoding.DecodeString(m.Headers["x-error-stack"])
			Expect(err).NotTo(HaveOccurred())
			Expect(string(stack)).To(ContainSubstring("Something happened"))
			Expect(decodeAll[user]([]*broker.Message{m})).To(Equal([]user{{1, "John", 2565}}))
		}

		It("moves a failing message straight to the queue with NoRetries", func() {
			ch, group, dlq := uniq("test.dl.topic"), uniq("mygroup"), uniq("DEAD_LETTER")
			bad, dead := &recorder{failWith: errors.New("Something happened")}, &recorder{}
			h.node([]any{
				&service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: channels.NoRetries,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlq}, Handler: bad.handle}}},
				&service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, user{1, "John", 2565}, broker.WithHeader("user-header", "kept"))).To(Succeed())
			Eventually(dead.count).Should(Equal(1))
			Consistently(bad.count).Should(Equal(1))
			expectDLQHeaders(dead.all()[0], ch, group, 0)
			e := broker.ErrorFromHeaders(dead.all()[0].Headers)
			Expect(e).NotTo(BeNil())
			Expect(e.Message).To(Equal("Something happened"))
		})

		It("moves a message to the queue after its retries", func() {
			ch, group, dlq := uniq("test.dlr.topic"), uniq("mygroup"), uniq("DEAD_LETTER")
			bad, dead := &recorder{failWith: errors.New("Something happened")}, &recorder{}
			h.node([]any{
				&service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: 2,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: bad.handle}}},
				&service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, user{1, "John", 2565}, broker.WithHeader("user-header", "kept"))).To(Succeed())
			Eventually(dead.count).Should(Equal(1))
			Consistently(bad.count).Should(Equal(3))
			expectDLQHeaders(dead.all()[0], ch, group, 2)
		})

		It("skips the retries of a Permanent error", func() {
			ch, dlq := uniq("test.perm.topic"), uniq("DLQ")
			bad, dead := &recorder{failWith: channels.Permanent(errors.New("Something happened"))}, &recorder{}
			h.node([]any{
				&service{Name: "sub1", Channels: channels.Channels{ch: {MaxRetries: 5,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: bad.handle}}},
				&service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, 1)).To(Succeed())
			Eventually(dead.count).Should(Equal(1))
			Consistently(bad.count).Should(Equal(1))
		})

		It("drops a message after its last attempt when dead-lettering is off, and goes on", func() {
			ch := uniq("test.drop.topic")
			var calls atomic.Int32
			h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 1,
				Handler: func(ctx context.Context, m *broker.Message) error {
					calls.Add(1)
					if string(m.Payload) == `"bad"` {
						return errors.New("nope")
					}
					return nil
				}}}}})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, "bad")).To(Succeed())
			Expect(snd.SendToChannel(ctx, ch, "good")).To(Succeed())
			Eventually(calls.Load).Should(BeEquivalentTo(3))
			Consistently(calls.Load).Should(BeEquivalentTo(3))
		})
	})

	Describe("poison messages", func() {
		It("dead-letters a payload that does not decode, without retries, and keeps consuming", func() {
			ch, dlq := uniq("test.poison.topic"), uniq("DLQ")
			var got atomic.Int32
			dead := &recorder{}
			h.node([]any{
				&service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 5,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
					Handler: channels.Typed(func(ctx context.Context, u user, m *broker.Message) error {
						got.Add(1)
						return nil
					})}}},
				&service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, []byte("not json {"), broker.WithRaw())).To(Succeed())
			Expect(snd.SendToChannel(ctx, ch, user{ID: 7})).To(Succeed())
			Eventually(got.Load).Should(BeEquivalentTo(1))
			Eventually(dead.count).Should(Equal(1))
			Expect(string(dead.all()[0].Payload)).To(Equal("not json {"))
			Expect(dead.all()[0].Headers).To(HaveKeyWithValue("x-redelivered-count", "0"))
			Expect(dead.all()[0].Headers["x-error-message"]).To(ContainSubstring("cannot decode payload"))
			Expect(dead.all()[0].Headers).To(HaveKeyWithValue("x-error-name", "DecodeError"))
		})

		It("dead-letters a message whose context headers do not decode", func() {
			ch, dlq := uniq("test.poison.meta.topic"), uniq("DLQ")
			var got atomic.Int32
			dead := &recorder{}
			h.node([]any{
				&service{Name: "sub", Channels: channels.Channels{ch: {
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
					Handler:       func(ctx context.Context, m *broker.Message) error { got.Add(1); return nil }}}},
				&service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, 1, broker.WithHeader("$meta", "%%% not base64"))).To(Succeed())
			Eventually(dead.count).Should(Equal(1))
			Expect(got.Load()).To(BeEquivalentTo(0))
			Expect(dead.all()[0].Headers["x-error-message"]).To(ContainSubstring("$meta"))
			Expect(dead.all()[0].Headers).To(HaveKeyWithValue("x-original-$meta", "%%% not base64"))
		})
	})

	Describe("graceful stop", func() {
		It("lets in-flight handlers finish, acks them, and loses nothing", func() {
			ch, group := uniq("test.drain.topic"), uniq("g")
			release := make(chan struct{})
			var started, finished atomic.Int32
			p := h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 3,
				Handler: func(ctx context.Context, m *broker.Message) error {
					started.Add(1)
					<-release
					finished.Add(1)
					return nil
				}}}}})
			snd := h.sender()
			for i := range 5 {
				Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
			}
			Eventually(started.Load).Should(BeEquivalentTo(3))
			stopped := make(chan error, 1)
			go func() { stopped <- p.Stop(ctx) }()
			Consistently(stopped, 200*time.Millisecond).ShouldNot(Receive())
			close(release)
			Eventually(stopped).Should(Receive(BeNil()))
			Expect(finished.Load()).To(BeEquivalentTo(3))
			Expect(started.Load()).To(BeEquivalentTo(3))

			// The two messages never started go to the next member; the three
			// finished ones were acked and are not redelivered.
			rest := &recorder{}
			h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {Group: group, MaxInFlight: 3, Handler: rest.handle}}}})
			Eventually(rest.count).Should(Equal(2))
			Consistently(rest.count).Should(Equal(2))
		})

		It("bounds the drain by the stop context and cancels the handlers' context", func() {
			ch := uniq("test.drain.timeout.topic")
			var cancelled atomic.Bool
			var started atomic.Int32
			p := h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {
				Handler: func(ctx context.Context, m *broker.Message) error {
					started.Add(1)
					<-ctx.Done()
					cancelled.Store(true)
					return ctx.Err()
				}}}}})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, 1)).To(Succeed())
			Eventually(started.Load).Should(BeEquivalentTo(1))
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			err := p.Stop(sctx)
			Expect(err).To(MatchError(channels.ErrDrainTimeout))
			Eventually(cancelled.Load).Should(BeTrue())
		})

		It("neither dead-letters nor drops a last attempt cut by the drain deadline: it comes back as the same attempt", func() {
			ch, group, dlq := uniq("test.drain.last.topic"), uniq("lastgroup"), uniq("DEAD_LETTER")
			dl := &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlq}
			var started atomic.Int32
			dead := &recorder{}
			h.node([]any{&service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}}})
			p := h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {Group: group,
				MaxRetries: channels.NoRetries, DeadLettering: dl,
				Handler: func(ctx context.Context, m *broker.Message) error {
					started.Add(1)
					<-ctx.Done()
					return ctx.Err()
				}}}}})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, 1)).To(Succeed())
			Eventually(started.Load).Should(BeEquivalentTo(1))
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			err := p.Stop(sctx)
			var de *broker.DrainError
			Expect(errors.As(err, &de)).To(BeTrue(), "%v", err)
			Expect(de.Channel).To(Equal(ch))
			Expect(de.Running).To(HaveLen(1))

			next := &recorder{}
			h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {Group: group,
				MaxRetries: channels.NoRetries, DeadLettering: dl, Handler: next.handle}}}})
			Eventually(next.count).Should(Equal(1))
			m := next.all()[0]
			Expect(m.ID).To(Equal(de.Running[0]))
			Expect(m.Attempt).To(Equal(1))
			Consistently(dead.count, 500*time.Millisecond).Should(Equal(0))
		})

		It("leaves no goroutine behind after Stop", func() {
			before := clientGoroutines()
			ch := uniq("test.leak.topic")
			rec := &recorder{}
			p := h.plugin()
			Expect(p.Register(&service{Name: "sub", Channels: h.withTargetOptions(channels.Channels{ch: {MaxInFlight: 5, Handler: rec.handle}})})).To(Succeed())
			Expect(p.Start(ctx)).To(Succeed())
			for i := range 10 {
				Expect(p.SendToChannel(ctx, ch, i)).To(Succeed())
			}
			Eventually(rec.count).Should(Equal(10))
			Expect(p.Stop(ctx)).To(Succeed())
			Eventually(clientGoroutines).Should(BeNumerically("<=", before))
		})
	})

	Describe("errors instead of silent drops", func() {
		It("refuses to send before Start and after Stop with typed errors", func() {
			p := h.plugin()
			Expect(p.SendToChannel(ctx, uniq("x"), 1)).To(MatchError(channels.ErrNotConnected))
			Expect(p.Start(ctx)).To(Succeed())
			Expect(p.SendToChannel(ctx, uniq("x"), 1)).To(Succeed())
			Expect(p.Stop(ctx)).To(Succeed())
			Expect(p.SendToChannel(ctx, uniq("x"), 1)).To(MatchError(channels.ErrClosed))
		})

		It("refuses payloads that do not serialize", func() {
			p := h.sender()
			err := p.SendToChannel(ctx, uniq("x"), map[string]any{"f": func() {}})
			Expect(err).To(MatchError(channels.ErrEncode))
			var ee *broker.EncodeError
			Expect(errors.As(err, &ee)).To(BeTrue())
			Expect(p.SendToChannel(ctx, uniq("x"), 42, broker.WithRaw())).To(MatchError(channels.ErrEncode))
		})

		It("rejects bad configuration with typed errors and subscribes nothing", func() {
			a, err := h.tg.NewAdapter()
			Expect(err).NotTo(HaveOccurred())
			_, err = channels.New(channels.WithAdapter(a), channels.WithMaxInFlight(0))
			Expect(err).To(MatchError(channels.ErrInvalidOption))
			_, err = channels.New(channels.WithAdapter("nosuchbroker://127.0.0.1"))
			Expect(err).To(MatchError(channels.ErrUnknownAdapter))
			p := h.plugin()
			Expect(p.Register(&service{Name: "sub", Channels: channels.Channels{uniq("x"): {}}})).To(MatchError(channels.ErrNoHandler))
			Expect(p.Register(&service{Name: "sub", Channels: channels.Channels{uniq("x"): {MaxInFlight: -1,
				Handler: func(context.Context, *broker.Message) error { return nil }}}})).To(MatchError(channels.ErrInvalidOption))
			// Nothing was registered: the plugin still starts and stops cleanly.
			Expect(p.Start(ctx)).To(Succeed())
			Expect(p.Stop(ctx)).To(Succeed())
		})

		It("can start again after Stop", func() {
			ch := uniq("test.restart.topic")
			rec := &recorder{}
			p := h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: channels.On(rec.handle)}}})
			Expect(p.Stop(ctx)).To(Succeed())
			Expect(p.Start(ctx)).To(Succeed())
			Expect(p.SendToChannel(ctx, ch, 1)).To(Succeed())
			Eventually(rec.count).Should(Equal(1))
		})
	})

	It("batch send: every message delivered once, per-message results, one bad payload fails only itself", func() {
		ch := uniq("test.batch.topic")
		rec := &recorder{}
		h.node([]any{&service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 10, Handler: rec.handle}}}})
		snd := h.sender()

		// Nothing connected, then closed: every message fails, typed.
		idle := h.plugin()
		err := idle.SendBatch(ctx, ch, channels.BatchOf(1, 2))
		var be *channels.BatchError
		Expect(errors.As(err, &be)).To(BeTrue())
		Expect(be.Failed()).To(Equal([]int{0, 1}))
		Expect(err).To(MatchError(channels.ErrNotConnected))

		const n = 40
		const bad = 17
		items := make([]channels.BatchItem, n)
		for i := range items {
			items[i].Payload = user{ID: i}
		}
		items[bad].Payload = map[string]any{"f": func() {}}
		items[3].Options = []channels.SendOption{channels.WithHeader("own", "3")}
		sendCtx := channels.WithMeta(ctx, map[string]any{"tenant": "acme"})
		err = snd.SendBatch(sendCtx, ch, items, channels.WithHeader("batch", "1"))
		Expect(errors.As(err, &be)).To(BeTrue(), "%v", err)
		Expect(be.Errors).To(HaveLen(n))
		Expect(be.Failed()).To(Equal([]int{bad}))
		Expect(be.Sent()).To(Equal(n - 1))
		Expect(err).To(MatchError(channels.ErrEncode))
		var ee *broker.EncodeError
		Expect(errors.As(be.Err(bad), &ee)).To(BeTrue())

		want := make([]int, 0, n)
		for i := range n {
			if i != bad {
				want = append(want, i)
			}
		}
		Eventually(rec.count).Should(Equal(n - 1))
		Consistently(rec.count).Should(Equal(n - 1))
		Expect(idsOf(rec)).To(Equal(want))
		requestIDs := map[string]bool{}
		for _, m := range rec.all() {
			var u user
			Expect(m.Decode(&u)).To(Succeed())
			Expect(m.Attempt).To(Equal(1))
			Expect(m.Headers).To(HaveKeyWithValue("batch", "1"))
			if u.ID == 3 {
				Expect(m.Headers).To(HaveKeyWithValue("own", "3"))
			} else {
				Expect(m.Headers).NotTo(HaveKey("own"))
			}
			Expect(m.Headers).To(HaveKey(broker.HeaderMeta))
			requestIDs[m.Headers[broker.HeaderRequestID]] = true
		}
		Expect(requestIDs).To(HaveLen(n-1), "each message has a request id of its own outside a handler")

		// A batch larger than the adapters' rounds and windows, all sent.
		const big = 1500
		Expect(snd.SendBatch(ctx, ch, channels.BatchOf(make([]user, big)...))).To(Succeed())
		Eventually(rec.count).Should(Equal(n - 1 + big))
		Consistently(rec.count).Should(Equal(n - 1 + big))

		Expect(snd.Stop(ctx)).To(Succeed())
		Expect(snd.SendBatch(ctx, ch, channels.BatchOf(1))).To(MatchError(channels.ErrClosed))
	})

	It("runs interceptors in registration order around handlers and sends", func() {
		ch := uniq("test.hooks.topic")
		var mu sync.Mutex
		var trace []string
		add := func(s string) { mu.Lock(); trace = append(trace, s); mu.Unlock() }
		mk := func(name string) hooks.Interceptor {
			return hooks.Interceptor{Name: name,
				LocalChannel: func(next broker.Handler, info hooks.Info) broker.Handler {
					return func(ctx context.Context, m *broker.Message) error {
						add(name + " before " + info.Key)
						err := next(ctx, m)
						add(name + " after")
						return err
					}
				},
				SendToChannel: func(next hooks.SendFunc) hooks.SendFunc {
					return func(ctx context.Context, channel string, payload any, opts ...broker.PublishOption) error {
						add(name + " send " + channel)
						return next(ctx, channel, payload, append(opts, broker.WithHeader("via-"+name, "1"))...)
					}
				}}
		}
		var hdrs map[string]string
		sv := &service{Name: "sub", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *broker.Message) error {
			mu.Lock()
			hdrs = m.Headers
			mu.Unlock()
			add("handler")
			return nil
		})}}
		p := h.node([]any{sv}, channels.WithInterceptors(mk("A"), mk("B")))
		Expect(p.SendToChannel(ctx, ch, 1)).To(Succeed())
		Eventually(func() int { mu.Lock(); defer mu.Unlock(); return len(trace) }).Should(Equal(7))
		mu.Lock()
		defer mu.Unlock()
		Expect(trace).To(Equal([]string{"A send " + ch, "B send " + ch, "A before " + ch, "B before " + ch, "handler", "B after", "A after"}))
		Expect(hdrs).To(HaveKeyWithValue("via-A", "1"))
		Expect(hdrs).To(HaveKeyWithValue("via-B", "1"))
	})

	It("ends a handler's context when the handler returns, for the handler and its interceptors", func() {
		ch := uniq("test.ctxend")
		type seen struct{ handler, interceptor chan struct{} }
		got := make(chan seen, 4)
		var mu sync.Mutex
		var pending seen
		ic := channels.Interceptor{Name: "watch", LocalChannel: func(next broker.Handler, _ channels.Info) broker.Handler {
			return func(ctx context.Context, m *broker.Message) error {
				done := make(chan struct{})
				go func() { <-ctx.Done(); close(done) }() // work the interceptor started and did not wait for
				mu.Lock()
				pending.interceptor = done
				mu.Unlock()
				return next(ctx, m)
			}
		}}
		sv := &service{Name: "sub", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *broker.Message) error {
			if ctx.Err() != nil {
				return fmt.Errorf("the context ended before the handler returned: %w", ctx.Err())
			}
			done := make(chan struct{})
			go func() { <-ctx.Done(); close(done) }() // work the handler started and did not wait for
			mu.Lock()
			pending.handler = done
			s := pending
			mu.Unlock()
			got <- s
			return nil
		})}}
		p := h.node([]any{sv}, channels.WithInterceptors(ic))
		Expect(p.SendToChannel(ctx, ch, 1)).To(Succeed())
		var s seen
		Eventually(got).Should(Receive(&s))
		Eventually(s.handler, time.Second).Should(BeClosed(), "the handler's goroutine saw ctx.Done() after the handler returned")
		Eventually(s.interceptor, time.Second).Should(BeClosed(), "the interceptor's goroutine saw ctx.Done()")
	})

	It("stacks plugins with their own adapters and schema properties (Multi)", func() {
		type multi struct {
			Name             string
			Channels         channels.Channels
			OtherChannels    channels.Channels
			SendToChannel    channels.SendFunc
			SendToOther      channels.SendFunc
			ChannelAdapter   broker.Adapter
			OtherAdapter     broker.Adapter
			EmitLocalChannel channels.TriggerFunc
		}
		c1, c2 := uniq("test.default.options.topic"), uniq("test.other.topic")
		r1, r2 := &recorder{}, &recorder{}
		m := &multi{Name: "sub",
			Channels:      h.withTargetOptions(channels.Channels{c1: {Group: "mygroup", Handler: r1.handle}}),
			OtherChannels: h.withTargetOptions(channels.Channels{c2: {Group: "mygroup", Handler: r2.handle}})}
		p1 := h.plugin()
		p2 := h.plugin(channels.WithSchemaProperty("OtherChannels"), channels.WithSendMethodName("SendToOther"),
			channels.WithAdapterPropertyName("OtherAdapter"), channels.WithChannelHandlerTrigger("EmitLocalChannel"))
		Expect(p1.Register(m)).To(Succeed())
		Expect(p2.Register(m)).To(Succeed())
		for _, p := range []*channels.Plugin{p1, p2} {
			Expect(p.Start(ctx)).To(Succeed())
			DeferCleanup(p.Stop, context.Background())
		}
		Expect(m.ChannelAdapter).To(BeIdenticalTo(p1.Adapter()))
		Expect(m.OtherAdapter).To(BeIdenticalTo(p2.Adapter()))
		Expect(m.SendToChannel(ctx, c1, map[string]string{"test": "default"})).To(Succeed())
		Expect(m.SendToOther(ctx, c2, map[string]int{"test": 123})).To(Succeed())
		Eventually(func() []int { return []int{r1.count(), r2.count()} }).Should(Equal([]int{1, 1}))
		Consistently(func() []int { return []int{r1.count(), r2.count()} }).Should(Equal([]int{1, 1}))
	})

	observability(tg, func() *harness { return h })
}

func idsOf(r *recorder) []int {
	var ids []int
	for _, u := range decodeAll[user](r.all()) {
		ids = append(ids, u.ID)
	}
	sort.Ints(ids)
	return ids
}

func slicesCompact(s []int) []int {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// clientGoroutines counts the goroutines of the process, except those of a
// broker embedded in the test process (an in-process NATS server starts
// goroutines of its own for every new stream and consumer).
func clientGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "nats-server/v2/server.") {
			count++
		}
	}
	return count
}
