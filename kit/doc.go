// Package kit is what an adapter is built from, so that retries,
// dead-lettering, poison messages, MaxInFlight, the attempt rule and
// draining behave the same on every broker. Service authors never import
// it; package broker holds the contract it works on (Adapter, Channel,
// Message, the wire format) and the root package what services use.
//
// # Where things are
//
//   - outcome.go: what happens to a delivery: the attempt rule ([Admit]),
//     the run, the decision after a failure ([Decide]) and the settling
//     ([Settle]) through the adapter's [Settler]; [Deliver] does all of it.
//   - deadletter.go: the dead-letter copy, and a dead letter the broker refuses.
//   - consumer.go, readahead.go, inflight.go: [Consumer], the delivery
//     skeleton a subscription embeds: MaxInFlight slots, the read-ahead of
//     fetch loops, the handlers' goroutines.
//   - drain.go: how a stop drains ([Consumer.Drain], [Subscriptions]) and
//     the bounded calls of a stop ([Bounded]).
//   - lifecycle.go, state.go: [Lifecycle], an adapter's connection, its
//     state and the subscriptions Close drains.
//   - reconnect.go, beat.go: the backoff of a failing read or
//     reconnection, periodic work.
//   - options.go, overlay.go: typed channel and send options
//     ([PrepareChannel], [CheckOptions], [Overlay]).
//   - batch.go, batcher.go: batch sends ([PublishBatch]) and [Batcher].
//
// # Writing an adapter
//
// An adapter must:
//
//  1. Connect, Publish (return only once the broker accepted the message;
//     wrap failures in *broker.PublishError) and Close; [Lifecycle] gives
//     the shared openings of both (Close drains the subscriptions).
//  2. In Subscribe: [PrepareChannel] (normalizes and validates the channel,
//     refuses options of types it does not know, lays the channel's typed
//     options over the adapter-wide ones, applies the adapter's defaults and
//     validates the result), provision names and groups, and return a
//     subscription embedding a [Consumer].
//  3. Fetch: a loop that takes a slot (Acquire), fetches, builds a
//     [Delivery] — Msg.Attempt = 1 + failed runs the broker (or a record of
//     the adapter) knows of; Deliveries = the broker's delivery counter when
//     it has one; Final and Failure when a failure record says so;
//     DecodeField/DecodeErr for an envelope that does not decode — and hands
//     it to Consumer.Run. It never decides an outcome itself.
//  4. Settle: implement [Settler] on the broker: Ack; Retry (record the
//     failed run, redeliver after the delay without blocking other
//     messages); DeadLetter (publish, confirmed); Keep (leave the message
//     pending and remember its final failure); Release (give the message
//     back at once, with no attempt and, where the broker counts
//     deliveries, no delivery used up).
//  5. Drain: in DrainHooks.StopFetching end blocking fetches at once; in
//     Finish flush acknowledgements and hand back what was fetched but not
//     run, all bounded by the drain's context.
//
// Optional abilities (package broker): BatchPublisher (PublishBatch: many
// messages to one channel in one go, one result each; without it a batch
// goes through Publish, [DefaultBatchConcurrency] at a time), LagReporter,
// ChannelRemover, Limiter.
//
// Then run the shared suite on it: channelstest.Run with a Target holding
// a constructor, a probe and short test timings. The conformance suite and
// the fault suite (crash, broker restart, stop under load, slow handler,
// hostile input, broker down, frozen links) then run against it.
package kit
