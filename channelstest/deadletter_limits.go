package channelstest

import (
	"context"
	"errors"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// Dead letters and sends that a broker may refuse: error texts with line
// breaks, errors and headers larger than what the broker takes in one
// frame or message. Each failing message reaches the dead-letter queue
// exactly once, on every target; a send over the broker's limits fails
// with a clear error and harms nothing else.
var _ = specs(func() {
	Describe("limits", Label("limits"), func() {
		targetsMu.Lock()
		ts := append([]Target(nil), targets...)
		targetsMu.Unlock()
		for _, tg := range ts {
			Describe(tg.Name, Label(tg.Name), func() {
				limitSpecs(tg)
			})
		}
	})
})

func limitSpecs(tg Target) {
	var h *harness
	ctx := context.Background()
	BeforeEach(func() { h = prepare(tg) })

	deadLetterOnce := func(maxRetries int, fail error, check func(m *broker.Message)) {
		GinkgoHelper()
		ch, group, dlq := uniq("test.refuse"), uniq("refuse"), uniq("REFUSE_DLQ")
		bad, dead := &Recorder{FailWith: fail}, &Recorder{}
		h.node([]any{
			&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: maxRetries,
				DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: bad.Handle}}},
			&Service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
		})
		snd := h.sender()
		Expect(snd.SendToChannel(ctx, ch, user{1, "John", 2565}, broker.WithHeader("user-header", "kept"))).To(Succeed())
		Eventually(dead.Count, 30*time.Second).Should(Equal(1), "the dead letter arrives")
		Consistently(dead.Count, time.Second).Should(Equal(1), "exactly once")
		Expect(bad.Count()).To(Equal(1+max(maxRetries, 0)), "each attempt ran once")
		m := dead.All()[0]
		Expect(m.Headers).To(HaveKeyWithValue("x-original-channel", ch))
		Expect(decodeAll[user]([]*broker.Message{m})).To(Equal([]user{{1, "John", 2565}}))
		check(m)
	}

	It("dead-letters an error whose text has line breaks once, its message on one line", func() {
		err := errors.Join(errors.New("first line"), errors.New("second\r\nthird"))
		deadLetterOnce(1, err, func(m *broker.Message) {
			Expect(m.Headers["x-error-message"]).To(Equal(`first line\nsecond\r\nthird`))
			Expect(m.Headers["x-error-message"]).NotTo(ContainSubstring("\n"))
		})
	})

	It("dead-letters an error of 200 KB once, trimmed where the broker's limits need it", func() {
		big := strings.Repeat("e", 200<<10)
		deadLetterOnce(2, errors.New(big), func(m *broker.Message) {
			msg := m.Headers["x-error-message"]
			if trimmed, ok := m.Headers[broker.HeaderErrorTrimmed]; ok {
				Expect(trimmed).To(Or(ContainSubstring("x-error-"), Equal("headers")))
				Expect(len(msg)).To(BeNumerically("<", len(big)))
				Expect(msg).To(HavePrefix("eeee"))
			} else {
				Expect(msg).To(Equal(big))
			}
		})
	})

	It("refuses a send whose headers exceed the broker's limits, or delivers it whole; other sends go on", func() {
		ch := uniq("test.bighdr")
		r := &Recorder{}
		h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: channels.On(r.Handle)}}})
		snd := h.sender()
		big := strings.Repeat("h", 200<<10)
		err := snd.SendToChannel(ctx, ch, 1, broker.WithHeader("big", big))
		if l, ok := snd.Adapter().(broker.Limiter); ok && l.Limits().Check(1, map[string]string{"big": big}) != nil {
			Expect(err).To(HaveOccurred(), "a header over the broker's limits %+v was sent", l.Limits())
		}
		want := 1
		if err != nil {
			Expect(err).To(MatchError(broker.ErrTooLarge), "a refused send says why")
			var pe *broker.PublishError
			Expect(errors.As(err, &pe)).To(BeTrue())
			want = 0
		}
		Expect(snd.SendToChannel(ctx, ch, 2)).To(Succeed(), "the next send works")
		Eventually(r.Count).Should(Equal(want + 1))
		report("limits big-header %s: refused=%v", tg.Name, err != nil)
	})
}
