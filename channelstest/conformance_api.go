package channelstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/hooks"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// apiSpecs are the conformance specs of batches, interceptors, handler context and stacked plugins.
func apiSpecs(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

	It("batch send: every message delivered once, per-message results, one bad payload fails only itself", func() {
		ch := uniq("test.batch.topic")
		rec := &Recorder{}
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 10, Handler: rec.Handle}}}})
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
		Eventually(rec.Count).Should(Equal(n - 1))
		Consistently(rec.Count).Should(Equal(n - 1))
		Expect(idsOf(rec)).To(Equal(want))
		requestIDs := map[string]bool{}
		for _, m := range rec.All() {
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
		Eventually(rec.Count).Should(Equal(n - 1 + big))
		Consistently(rec.Count).Should(Equal(n - 1 + big))

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
		sv := &Service{Name: "sub", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *broker.Message) error {
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
		sv := &Service{Name: "sub", Channels: channels.Channels{ch: channels.On(func(ctx context.Context, m *broker.Message) error {
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
		r1, r2 := &Recorder{}, &Recorder{}
		m := &multi{Name: "sub",
			Channels:      h.withTargetOptions(channels.Channels{c1: {Group: "mygroup", Handler: r1.Handle}}),
			OtherChannels: h.withTargetOptions(channels.Channels{c2: {Group: "mygroup", Handler: r2.Handle}})}
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
		Eventually(func() []int { return []int{r1.Count(), r2.Count()} }).Should(Equal([]int{1, 1}))
		Consistently(func() []int { return []int{r1.Count(), r2.Count()} }).Should(Equal([]int{1, 1}))
	})
}
