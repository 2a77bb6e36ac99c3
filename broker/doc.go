// Package broker is the framework-free core of channels: the Adapter contract
// that every broker implementation satisfies, the Message handed to channel
// handlers, publish options, serializers, the wire header names shared with
// @moleculer/channels, the adapter registry, and the machinery that adapters
// share so that retries, dead-lettering, poison messages, MaxInFlight and
// draining behave the same on every broker.
//
// An adapter does three broker-specific things: it moves bytes (Publish,
// fetching), it acknowledges or redelivers, and it provisions names. Every
// decision about what happens to a delivery is taken by [Channel.Process],
// which runs the handler, recovers panics and returns an [Outcome]: ack,
// retry after a delay, dead-letter or drop. Adapters execute the outcome and
// nothing else, which is why the conformance suite can hold all of them to the
// same contract.
//
// This package imports no framework; go-micro integration lives in the root
// package github.com/microchannels/channels.
package broker
