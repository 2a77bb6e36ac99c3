package channelstest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// flowSpecs are the conformance specs of MaxInFlight, order and namespaces.
func flowSpecs(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

	It("processes one message at a time, in order, with MaxInFlight 1", func() {
		ch := uniq("test.mif.topic")
		var mu sync.Mutex
		var flow []string
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 1, AdapterOptions: tg.Ordered,
			Handler: func(ctx context.Context, m *broker.Message) error {
				var u user
				Expect(m.Decode(&u)).To(Succeed())
				mu.Lock()
				flow = append(flow, fmt.Sprintf("BEGIN: %d", u.ID))
				mu.Unlock()
				if err := SimulateWork(ctx, 50*time.Millisecond); err != nil {
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
		rec := &Recorder{Work: 30 * time.Millisecond}
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxInFlight: 4, Handler: rec.Handle}}}})
		snd := h.sender()
		for i := range 24 {
			Expect(snd.SendToChannel(ctx, ch, user{ID: i})).To(Succeed())
		}
		Eventually(rec.Count).Should(Equal(24))
		Expect(rec.maxSeen.Load()).To(BeEquivalentTo(4))
	})

	It("isolates namespaces", func() {
		topic := uniq("test.ns.topic")
		r1, r2, r3, r4 := &Recorder{}, &Recorder{}, &Recorder{}, &Recorder{}
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{topic: channels.On(r1.Handle)}}})
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{topic: channels.On(r2.Handle)}}}, channels.WithNamespace("A"))
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{topic: channels.On(r3.Handle)}}}, channels.WithNamespace("B"))
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{topic: {Group: "other", Handler: r4.Handle}}}})
		plain, a := h.sender(), h.sender(channels.WithNamespace("A"))
		Expect(plain.SendToChannel(ctx, topic, 1)).To(Succeed())
		Expect(plain.SendToChannel(ctx, topic, 2)).To(Succeed())
		Eventually(func() []int { return []int{r1.Count(), r4.Count()} }).Should(Equal([]int{2, 2}))
		Expect(a.SendToChannel(ctx, topic, 3)).To(Succeed())
		Eventually(r2.Count).Should(Equal(1))
		Consistently(func() []int { return []int{r1.Count(), r2.Count(), r3.Count(), r4.Count()} }).Should(Equal([]int{2, 1, 0, 2}))
		Expect(r2.All()[0].Channel).To(Equal("A." + topic))
	})

}
