package kit

import (
	"github.com/microchannels/channels/broker"

	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// DefaultBatchConcurrency bounds the Publish calls in flight when a batch
// goes to an adapter that does not implement [broker.BatchPublisher].
const DefaultBatchConcurrency = 16

// PublishBatch sends msgs to channel with the adapter's PublishBatch or,
// when a does not implement [broker.BatchPublisher], with Publish, at most
// DefaultBatchConcurrency messages at once (then in no particular order). Its
// result follows the BatchPublisher contract: nil when every message was
// accepted, else one error per message. An adapter that answers with a
// slice of another length has its whole batch reported as failed, since
// which messages went out cannot be told.
func PublishBatch(ctx context.Context, a broker.Adapter, channel string, msgs []*broker.Outgoing) []error {
	if len(msgs) == 0 {
		return nil
	}
	bp, ok := a.(broker.BatchPublisher)
	if !ok {
		return PublishEach(ctx, a, channel, msgs, DefaultBatchConcurrency)
	}
	errs := bp.PublishBatch(ctx, channel, msgs)
	if errs != nil && len(errs) != len(msgs) {
		return FailBatch(len(msgs), &broker.PublishError{Channel: channel,
			Err: fmt.Errorf("the %s adapter reported %d results for %d messages: their outcome is unknown", a.Name(), len(errs), len(msgs))})
	}
	return broker.BatchErrors(errs)
}

// PublishEach sends msgs with a.Publish, at most limit at once (limit < 1
// means 1), and returns nil when every message was accepted, else one error
// per message. Once ctx has ended, the messages not yet handed to Publish
// fail with a *PublishError wrapping ctx.Err().
func PublishEach(ctx context.Context, a broker.Adapter, channel string, msgs []*broker.Outgoing, limit int) []error {
	errs := make([]error, len(msgs))
	forEach(len(msgs), limit, func(i int) {
		if err := ctx.Err(); err != nil {
			errs[i] = &broker.PublishError{Channel: channel, Err: err}
			return
		}
		errs[i] = a.Publish(ctx, channel, msgs[i])
	})
	return broker.BatchErrors(errs)
}

// forEach calls f(0) ... f(n-1) from at most limit goroutines and returns
// once every call returned.
func forEach(n, limit int, f func(i int)) {
	limit = max(min(limit, n), 1)
	if limit == 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// FailBatch returns n copies of err: the result of a batch of n messages
// that all failed for one reason (not connected, closed, a bad channel).
func FailBatch(n int, err error) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}
