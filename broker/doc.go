// Package broker is the framework-free core of channels: the Adapter contract
// that every broker implementation satisfies, the Message handed to channel
// handlers, publish options, serializers, the wire header names shared with
// @moleculer/channels, the adapter registry, and the adapter kit that makes
// retries, dead-lettering, poison messages, MaxInFlight, the attempt rule and
// draining behave the same on every broker.
//
// Service authors need only the root package; this package is for adapter
// authors (and for the options and errors the root package re-exports).
//
// # The attempt rule
//
// Only a handler run that ended in an error uses up an attempt. A message
// fetched but never run (read ahead, held by a member that died, handed back
// at a stop), or whose run was cut by a crash or by the deadline of the plugin's own Stop,
// is delivered again with the same attempt number and is never dead-lettered
// or dropped for it. A message that keeps killing its consumers is given up
// (dead-lettered or dropped, with [ErrMaxDeliveries]) once its deliveries
// pass [RetryPolicy.MaxDeliveries] (default MaxRetries + 1 +
// [DefaultExtraDeliveries]). The x-redelivered-count header counts failed
// runs.
//
// # Writing an adapter
//
// The kit gives:
//
//   - [Consumer], the delivery skeleton an adapter's subscription embeds: the
//     MaxInFlight slots (Acquire, TryAcquire), the read-ahead of fetch loops
//     (AwaitFetch and Hold: at most MaxInFlight fetched messages wait, in
//     order, and each runs on the slot of the next handler that finishes,
//     on its goroutine; a drain hands them back unrun), the handlers'
//     context and their reused goroutines, the fetch loops started once (Start), and a drain that runs once, bounded
//     by its context, and returns a [*DrainError] naming the messages still
//     running when the deadline passed (Drain with [DrainHooks]).
//   - [Channel.Deliver], the one function that runs a delivery: [Channel.Admit]
//     applies the attempt rule (a kept final failure, an undecodable envelope,
//     a message over its attempt or delivery limit is given up without
//     running), then the handler runs (panics recovered), [Channel.Decide]
//     picks ack, retry after a backoff, dead-letter or drop, and the outcome
//     is carried out through the adapter's [Settler], with logging. A run cut
//     by the stop deadline is released, never retried or dead-lettered; a
//     dead-letter copy is confirmed before the original is acked, and a
//     failed dead-letter publish keeps the message pending with its failure
//     recorded (Settler.Keep).
//   - [Subscriptions], the set that Adapter.Close drains; [Reconnect], the
//     backoff of a failing read or reconnection; [ConnState] for
//     ErrNotConnected/ErrClosed; [CheckOptions] and [Option] / [SendOption]
//     for typed channel and send options, [MergedOption] to read merged send
//     options, [ApplyOptions] for an adapter's functional options.
//
// An adapter must:
//
//  1. Connect, Publish (return only once the broker accepted the message;
//     wrap failures in *PublishError) and Close (mark closed, then
//     Subscriptions.DrainAll).
//  2. In Subscribe: [PrepareChannel] (normalizes and validates the channel,
//     refuses options of types it does not know, overlays the channel's typed
//     options on the adapter-wide ones, applies the adapter's defaults and
//     validates the result), provision names and groups, and
//     return a subscription embedding a [Consumer].
//  3. Fetch: a loop that takes a slot (Acquire), fetches, builds a
//     [Delivery] — Msg.Attempt = 1 + failed runs the broker (or a record of
//     the adapter) knows of; Deliveries = the broker's delivery counter when
//     it has one; Final and Failure when a failure record says so;
//     DecodeField/DecodeErr for an envelope that does not decode — and hands
//     it to Consumer.Run. It must never decide an outcome itself.
//  4. Settle: implement [Settler] on the broker: Ack; Retry (record the failed
//     run, redeliver after the delay without blocking other messages);
//     DeadLetter (publish, confirmed); Keep (leave the message pending and
//     remember its final failure); Release (give the message back at once,
//     with no attempt and, where the broker counts deliveries, no delivery
//     used up).
//  5. Drain: in DrainHooks.StopFetching end blocking fetches at once; in
//     Finish flush acknowledgements and hand back what was fetched but not
//     run, all bounded by the drain's context.
//
// Optional abilities: [BatchPublisher] (PublishBatch: send many messages
// to one channel in one go, one result each; without it a batch goes
// through Publish, DefaultBatchConcurrency at a time), [LagReporter],
// [ChannelRemover].
//
// Then run the shared suite on it: channelstest.Run with a Target holding a
// constructor, a probe and short test timings. The conformance suite and the
// fault suite (crash, broker restart, stop under load, slow handler, hostile
// input, broker down, frozen links) then run against it.
//
// # Where things are
//
//   - adapter.go: the Adapter and Subscription contracts and their optional abilities.
//   - channel.go: a subscribed channel ([Channel]) and its typed options.
//   - outcome.go: what happens to a delivery: the attempt rule ([Channel.Admit]),
//     the run, the decision after a failure ([Channel.Decide]) and the settling.
//   - deadletter.go: the dead-letter copy, and a dead letter the broker refuses.
//   - retry.go: retry policies and backoffs.
//   - consumer.go, readahead.go, inflight.go: the delivery skeleton, its read-ahead
//     and its MaxInFlight slots.
//   - drain.go: how a stop drains, and the bounded calls of a stop ([Bounded]).
//   - reconnect.go: the backoff of a failing read or reconnection.
//   - errors.go: every error type and sentinel.
//   - wire.go, headers.go, headercodec.go, headerjson.go, serializer.go, limits.go:
//     the wire format shared with @moleculer/channels, with its bounds.
//   - publish.go, batcher.go: send options and batches.
//   - registry.go, redact.go: adapter URLs and the secrets kept out of logs and errors.
//
// This package imports no framework; go-micro integration lives in the root
// package github.com/microchannels/channels.
package broker
