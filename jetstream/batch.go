package jetstream

import (
	"context"
	"fmt"

	"github.com/microchannels/channels/kit"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"

	"github.com/microchannels/channels/broker"
)

// PublishBatch publishes the messages asynchronously, in order, at most
// BatchWindow awaiting their acknowledgement at a time, and waits for every
// acknowledgement, bounded by ctx (DefaultOpTimeout without a deadline).
// Each message gets the outcome Publish would give it. When the adapter has
// not seen the channel's stream yet, the first message is sent alone (it
// creates the stream when there is none), then the rest. A message id
// (WithMsgID) given to several messages of one batch is refused for each of
// them (ErrInvalidOption): JetStream would store only the first and
// acknowledge the others as duplicates.
func (a *Adapter) PublishBatch(ctx context.Context, channel string, msgs []*broker.Outgoing) []error {
	c, err := a.life.Current()
	if err != nil {
		return kit.FailBatch(len(msgs), err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultOpTimeout)
		defer cancel()
	}
	type prepared struct {
		i      int
		m      *nats.Msg
		popts  []js.PublishOpt
		id     string
		routed bool
	}
	errs := make([]error, len(msgs))
	ps := make([]prepared, 0, len(msgs))
	ids := map[string]int{}
	for i, out := range msgs {
		m, popts, err := prepareMsg(channel, out)
		if err != nil {
			errs[i] = err
			continue
		}
		p := prepared{i: i, m: m, popts: popts, routed: out.Options.Routed}
		if so, ok := sendOptions(out.Options.AdapterOptions); ok && so.MsgID != "" {
			p.id = so.MsgID
			ids[p.id]++
		}
		ps = append(ps, p)
	}
	kept := ps[:0]
	for _, p := range ps {
		if n := ids[p.id]; p.id != "" && n > 1 {
			errs[p.i] = fmt.Errorf("%w: jetstream message id %q is given to %d messages of one batch", broker.ErrInvalidOption, p.id, n)
			continue
		}
		kept = append(kept, p)
	}
	ps = kept
	// The first message is sent alone: one that finds no stream (never
	// seen, or removed elsewhere) creates it before the others go.
	if len(ps) > 0 {
		errs[ps[0].i] = a.publishEnsuring(ctx, c, channel, ps[0].m, ps[0].popts, ps[0].routed)
		ps = ps[1:]
	}
	_, known := a.streams.Load(channel)
	type flight struct {
		i      int
		f      js.PubAckFuture
		routed bool
	}
	var (
		flights = make([]flight, 0, len(ps))
		head    int
	)
	wait := func(fl flight) {
		select {
		case <-fl.f.Ok():
		case err := <-fl.f.Err():
			errs[fl.i] = &broker.PublishError{Channel: channel, Err: unrouted(err, fl.routed)}
		case <-ctx.Done():
			errs[fl.i] = &broker.PublishError{Channel: channel, Err: ctx.Err()}
		}
	}
	for _, p := range ps {
		if err := ctx.Err(); err != nil {
			errs[p.i] = &broker.PublishError{Channel: channel, Err: err}
			continue
		}
		for ; len(flights)-head >= BatchWindow; head++ {
			wait(flights[head])
		}
		popts := p.popts
		if !known {
			// Still no stream: fail at once rather than retry no responders.
			popts = append(popts, js.WithRetryAttempts(0))
		}
		f, err := c.js.PublishMsgAsync(p.m, popts...)
		if err != nil {
			errs[p.i] = &broker.PublishError{Channel: channel, Err: err}
			continue
		}
		flights = append(flights, flight{i: p.i, f: f, routed: p.routed})
	}
	for ; head < len(flights); head++ {
		wait(flights[head])
	}
	return broker.BatchErrors(errs)
}
