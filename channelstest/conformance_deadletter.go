package channelstest

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// deadletterSpecs are the conformance specs of dead letters and poison messages.
func deadletterSpecs(tg Target) {
	var h *harness
	ctx := context.Background()

	BeforeEach(func() { h = prepare(tg) })

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
			bad, dead := &Recorder{FailWith: errors.New("Something happened")}, &Recorder{}
			h.node([]any{
				&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: channels.NoRetries,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq, ExchangeName: dlq}, Handler: bad.Handle}}},
				&Service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, user{1, "John", 2565}, broker.WithHeader("user-header", "kept"))).To(Succeed())
			Eventually(dead.Count).Should(Equal(1))
			Consistently(bad.Count).Should(Equal(1))
			expectDLQHeaders(dead.All()[0], ch, group, 0)
			e := broker.ErrorFromHeaders(dead.All()[0].Headers)
			Expect(e).NotTo(BeNil())
			Expect(e.Message).To(Equal("Something happened"))
		})

		It("moves a message to the queue after its retries", func() {
			ch, group, dlq := uniq("test.dlr.topic"), uniq("mygroup"), uniq("DEAD_LETTER")
			bad, dead := &Recorder{FailWith: errors.New("Something happened")}, &Recorder{}
			h.node([]any{
				&Service{Name: "sub1", Channels: channels.Channels{ch: {Group: group, MaxRetries: 2,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: bad.Handle}}},
				&Service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, user{1, "John", 2565}, broker.WithHeader("user-header", "kept"))).To(Succeed())
			Eventually(dead.Count).Should(Equal(1))
			Consistently(bad.Count).Should(Equal(3))
			expectDLQHeaders(dead.All()[0], ch, group, 2)
		})

		It("skips the retries of a Permanent error", func() {
			ch, dlq := uniq("test.perm.topic"), uniq("DLQ")
			bad, dead := &Recorder{FailWith: channels.Permanent(errors.New("Something happened"))}, &Recorder{}
			h.node([]any{
				&Service{Name: "sub1", Channels: channels.Channels{ch: {MaxRetries: 5,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq}, Handler: bad.Handle}}},
				&Service{Name: "sub2", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, 1)).To(Succeed())
			Eventually(dead.Count).Should(Equal(1))
			Consistently(bad.Count).Should(Equal(1))
		})

		It("drops a message after its last attempt when dead-lettering is off, and goes on", func() {
			ch := uniq("test.drop.topic")
			var calls atomic.Int32
			h.node([]any{&Service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 1,
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
			dead := &Recorder{}
			h.node([]any{
				&Service{Name: "sub", Channels: channels.Channels{ch: {MaxRetries: 5,
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
					Handler: channels.Typed(func(ctx context.Context, u user, m *broker.Message) error {
						got.Add(1)
						return nil
					})}}},
				&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, []byte("not json {"), broker.WithRaw())).To(Succeed())
			Expect(snd.SendToChannel(ctx, ch, user{ID: 7})).To(Succeed())
			Eventually(got.Load).Should(BeEquivalentTo(1))
			Eventually(dead.Count).Should(Equal(1))
			Expect(string(dead.All()[0].Payload)).To(Equal("not json {"))
			Expect(dead.All()[0].Headers).To(HaveKeyWithValue("x-redelivered-count", "0"))
			Expect(dead.All()[0].Headers["x-error-message"]).To(ContainSubstring("cannot decode payload"))
			Expect(dead.All()[0].Headers).To(HaveKeyWithValue("x-error-name", "DecodeError"))
		})

		It("dead-letters a message whose context headers do not decode", func() {
			ch, dlq := uniq("test.poison.meta.topic"), uniq("DLQ")
			var got atomic.Int32
			dead := &Recorder{}
			h.node([]any{
				&Service{Name: "sub", Channels: channels.Channels{ch: {
					DeadLettering: &channels.DeadLettering{Enabled: true, QueueName: dlq},
					Handler:       func(ctx context.Context, m *broker.Message) error { got.Add(1); return nil }}}},
				&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.Handle)}},
			})
			snd := h.sender()
			Expect(snd.SendToChannel(ctx, ch, 1, broker.WithHeader("$meta", "%%% not base64"))).To(Succeed())
			Eventually(dead.Count).Should(Equal(1))
			Expect(got.Load()).To(BeEquivalentTo(0))
			Expect(dead.All()[0].Headers["x-error-message"]).To(ContainSubstring("$meta"))
			Expect(dead.All()[0].Headers).To(HaveKeyWithValue("x-original-$meta", "%%% not base64"))
		})
	})

}
