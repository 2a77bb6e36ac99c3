package channels

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/microchannels/channels/kit"

	"github.com/microchannels/channels/broker"
)

// SendBatch sends many messages to channel (the name before the namespace
// prefix) and reports the outcome of each. It returns nil when the broker
// accepted every message, otherwise a *BatchError whose Errors hold one
// entry per item, in order: nil for a message that was sent, else its error,
// of the kinds SendToChannel returns. A payload that does not serialize, or
// an item whose own options are invalid, fails only that item; a plugin not
// connected (ErrNotConnected), stopped (ErrClosed), an invalid channel name
// or invalid batch options fail every item, and nothing is sent.
//
// Each item is sent as SendToChannel would send it: opts then the item's
// own Options, the same serialization, the same context headers (from a
// handler's ctx, its request id, caller, parent channel and metadata;
// outside a handler a new $requestID for every message), the same metrics
// and spans, counted per message. The messages go to the broker as one
// batch (an adapter implementing broker.BatchPublisher pipelines them, in
// the batch order; otherwise they are published at most
// kit.DefaultBatchConcurrency at a time, in no particular order). Without
// a deadline on ctx the whole batch is bounded by the publish timeout
// (DefaultPublishTimeout, or the one of WithTimeouts).
//
// Interceptors: a batch goes through the SendBatch hooks of the
// interceptors. When an interceptor has a SendToChannel hook and no
// SendBatch hook, each item is sent on its own through SendToChannel
// instead (at most kit.DefaultBatchConcurrency at a time), so no send
// ever skips an interceptor.
func (p *Plugin) SendBatch(ctx context.Context, channel string, items []BatchItem, opts ...SendOption) error {
	if len(items) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.o.publishTimeout)
		defer cancel()
	}
	var errs []error
	if p.sendBatch != nil {
		errs = p.sendBatch(ctx, channel, items, opts...)
		if errs != nil && len(errs) != len(items) {
			errs = kit.FailBatch(len(items), &broker.PublishError{Channel: channel,
				Err: fmt.Errorf("a SendBatch interceptor returned %d results for %d messages: their outcome is unknown", len(errs), len(items))})
		}
	} else {
		errs = p.sendEach(ctx, channel, items, opts)
	}
	return broker.NewBatchError(channel, errs)
}

// BatchOf makes the items of a batch from payloads, with no options of
// their own: p.SendBatch(ctx, "order.created", channels.BatchOf(orders...)).
func BatchOf[T any](payloads ...T) []BatchItem {
	items := make([]BatchItem, len(payloads))
	for i, v := range payloads {
		items[i].Payload = v
	}
	return items
}

// sendEach sends the items of a batch one by one through SendToChannel and
// its interceptors, at most kit.DefaultBatchConcurrency at once.
func (p *Plugin) sendEach(ctx context.Context, channel string, items []BatchItem, opts []broker.PublishOption) []error {
	errs := make([]error, len(items))
	sem := make(chan struct{}, kit.DefaultBatchConcurrency)
	var wg sync.WaitGroup
	for i, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = p.SendToChannel(ctx, channel, it.Payload, slices.Concat(opts, it.Options)...)
		}()
	}
	wg.Wait()
	return broker.BatchErrors(errs)
}

// sendBatch0 is the innermost batch send, wrapped by the SendBatch hooks of
// the interceptors: every item is serialized and given its headers as
// send0 does, then the batch goes to the adapter at once (SendBatch has
// bounded ctx).
func (p *Plugin) sendBatch0(ctx context.Context, channel string, items []BatchItem, opts ...broker.PublishOption) []error {
	switch p.state.Load() {
	case stateIdle:
		return kit.FailBatch(len(items), ErrNotConnected)
	case stateStopped:
		return kit.FailBatch(len(items), ErrClosed)
	}
	name := prefixed(p.o.namespace, channel)
	if err := checkName("channel name", name); err != nil {
		return kit.FailBatch(len(items), err)
	}
	base, err := broker.NewPublishOptions(opts...)
	if err != nil {
		return kit.FailBatch(len(items), err)
	}
	sc, err := p.sendContext(ctx)
	if err != nil {
		return kit.FailBatch(len(items), &broker.EncodeError{Channel: name, Err: err})
	}
	errs := make([]error, len(items))
	msgs := make([]*broker.Outgoing, 0, len(items))
	at := make([]int, 0, len(items)) // the item of each message
	for i, it := range items {
		po := base
		if len(it.Options) > 0 {
			if po, err = broker.NewPublishOptions(slices.Concat(opts, it.Options)...); err != nil {
				errs[i] = err
				continue
			}
		}
		body, err := p.encode(name, it.Payload, po.Raw)
		if err != nil {
			errs[i] = err
			continue
		}
		headers := sc.headers(p, po.Headers)
		po.Headers = nil
		if err := p.limits.Check(len(body), headers); err != nil {
			errs[i] = &broker.PublishError{Channel: name, Err: err}
			continue
		}
		msgs = append(msgs, &broker.Outgoing{Payload: body, Headers: headers, Options: po})
		at = append(at, i)
	}
	for j, err := range kit.PublishBatch(ctx, p.adapter, name, msgs) {
		errs[at[j]] = err
	}
	return broker.BatchErrors(errs)
}
