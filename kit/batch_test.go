package kit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/microchannels/channels/kit"

	"github.com/onsi/gomega"

	"github.com/microchannels/channels/broker"
)

// gateAdapter's Publish holds every send until release is closed, and
// records how many were in flight at once.
type gateAdapter struct {
	inflight, most atomic.Int32
	release        chan struct{}
	mu             sync.Mutex
	got            []string
}

func (a *gateAdapter) Name() string                              { return "Gate" }
func (a *gateAdapter) Connect(context.Context, broker.Env) error { return nil }
func (a *gateAdapter) Close(context.Context) error               { return nil }
func (a *gateAdapter) Subscribe(context.Context, *broker.Channel) (broker.Subscription, error) {
	return nil, broker.ErrUnsupported
}

func (a *gateAdapter) Publish(ctx context.Context, channel string, msg *broker.Outgoing) error {
	n := a.inflight.Add(1)
	defer a.inflight.Add(-1)
	for {
		m := a.most.Load()
		if n <= m || a.most.CompareAndSwap(m, n) {
			break
		}
	}
	<-a.release
	if string(msg.Payload) == "bad" {
		return &broker.PublishError{Channel: channel, Err: errors.New("refused")}
	}
	a.mu.Lock()
	a.got = append(a.got, string(msg.Payload))
	a.mu.Unlock()
	return nil
}

func outgoing(payloads ...string) []*broker.Outgoing {
	out := make([]*broker.Outgoing, len(payloads))
	for i, p := range payloads {
		out[i] = &broker.Outgoing{Payload: []byte(p)}
	}
	return out
}

// TestPublishBatchFallbackIsBounded: without BatchPublisher the batch goes
// through Publish, never more than DefaultBatchConcurrency at once, each
// message with its own result.
func TestPublishBatchFallbackIsBounded(t *testing.T) {
	g := gomega.NewWithT(t)
	a := &gateAdapter{release: make(chan struct{})}
	payloads := make([]string, 3*kit.DefaultBatchConcurrency)
	for i := range payloads {
		payloads[i] = fmt.Sprint(i)
	}
	payloads[5] = "bad"
	done := make(chan []error)
	go func() { done <- kit.PublishBatch(context.Background(), a, "c", outgoing(payloads...)) }()
	g.Eventually(a.inflight.Load).Should(gomega.Equal(int32(kit.DefaultBatchConcurrency)))
	close(a.release)
	errs := <-done
	g.Expect(a.most.Load()).To(gomega.Equal(int32(kit.DefaultBatchConcurrency)))
	g.Expect(errs).To(gomega.HaveLen(len(payloads)))
	for i, err := range errs {
		if i == 5 {
			g.Expect(err).To(gomega.MatchError(broker.ErrPublish))
		} else {
			g.Expect(err).NotTo(gomega.HaveOccurred())
		}
	}
	g.Expect(a.got).To(gomega.HaveLen(len(payloads) - 1))

	// Every message accepted: nil.
	g.Expect(kit.PublishBatch(context.Background(), a, "c", outgoing("x", "y"))).To(gomega.BeNil())
	// Once ctx has ended, nothing more is handed to Publish.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, err := range kit.PublishBatch(ctx, a, "c", outgoing("x", "y")) {
		g.Expect(err).To(gomega.MatchError(context.Canceled))
	}
}

// lyingAdapter's PublishBatch answers with the wrong number of results.
type lyingAdapter struct{ gateAdapter }

func (a *lyingAdapter) PublishBatch(context.Context, string, []*broker.Outgoing) []error {
	return []error{nil}
}

// TestPublishBatchWrongResultCount: a result slice of another length
// cannot say which messages went out: every message is reported failed.
func TestPublishBatchWrongResultCount(t *testing.T) {
	g := gomega.NewWithT(t)
	errs := kit.PublishBatch(context.Background(), &lyingAdapter{}, "c", outgoing("a", "b", "c"))
	g.Expect(errs).To(gomega.HaveLen(3))
	for _, err := range errs {
		g.Expect(err).To(gomega.MatchError(broker.ErrPublish))
		g.Expect(err.Error()).To(gomega.ContainSubstring("reported 1 results for 3 messages"))
	}
}

func TestBatchError(t *testing.T) {
	g := gomega.NewWithT(t)
	g.Expect(broker.NewBatchError("c", nil)).To(gomega.Succeed())
	g.Expect(broker.NewBatchError("c", []error{nil, nil})).To(gomega.Succeed())
	enc := &broker.EncodeError{Channel: "c", Err: errors.New("no")}
	pub := &broker.PublishError{Channel: "c", Err: errors.New("refused")}
	err := broker.NewBatchError("c", []error{nil, enc, nil, pub})
	var be *broker.BatchError
	g.Expect(errors.As(err, &be)).To(gomega.BeTrue())
	g.Expect(be.Failed()).To(gomega.Equal([]int{1, 3}))
	g.Expect(be.Sent()).To(gomega.Equal(2))
	g.Expect(be.Err(1)).To(gomega.BeIdenticalTo(enc))
	g.Expect(be.Err(0)).To(gomega.Succeed())
	g.Expect(be.Err(9)).To(gomega.Succeed())
	g.Expect(err).To(gomega.MatchError(broker.ErrEncode))
	g.Expect(err).To(gomega.MatchError(broker.ErrPublish))
	var pe *broker.PublishError
	g.Expect(errors.As(err, &pe)).To(gomega.BeTrue())
	g.Expect(pe).To(gomega.BeIdenticalTo(pub))
	g.Expect(err.Error()).To(gomega.Equal(`channels: 2 of 4 messages to "c" not sent; message 1: ` + enc.Error() + " (and 1 more)"))
	g.Expect(broker.BatchErrors([]error{nil})).To(gomega.BeNil())
	g.Expect(kit.FailBatch(2, pub)).To(gomega.Equal([]error{pub, pub}))
}
