// Package broker is the contract between channels and its adapters: the
// Adapter interface every broker implementation satisfies and the Channel
// it is handed, the Message given to channel handlers, send options,
// serializers, the errors, retry policies and backoffs, the wire format
// shared with @moleculer/channels (header names, the headers codec, the
// x-error-* codec, the size limits), the adapter registry and the
// redaction of credentials.
//
// Service authors need only the root package, which re-exports what they
// use from here. Adapter authors build on package kit, which carries out
// this contract the same way on every broker.
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
// # Where things are
//
//   - adapter.go: the Adapter and Subscription contracts and their optional
//     abilities (BatchPublisher, LagReporter, ChannelRemover, Limiter).
//   - channel.go: a subscribed channel ([Channel]) as an adapter receives it.
//   - outcome.go: the outcome of a delivery ([Outcome], [Action]) and what an
//     [Observer] sees of it.
//   - retry.go, deadletter.go: retry and dead-letter policies, backoffs.
//   - errors.go: every error type and sentinel.
//   - message.go, serializer.go, publish.go: the message, serializers, send options.
//   - wire.go, headers.go, headercodec.go, headerjson.go, limits.go: the wire
//     format shared with @moleculer/channels, with its bounds.
//   - registry.go, redact.go: adapter URLs and the secrets kept out of logs and errors.
//
// This package imports no framework; go-micro integration lives in the root
// package github.com/microchannels/channels.
package broker
