// Package memory is an in-process channels adapter with the full semantics
// of the conformance suite: consumer groups with competing consumers and
// fan-out across groups, a backlog kept for a group whose consumers are
// gone, MaxInFlight, retries with backoff and an attempt counter,
// dead-lettering, poison messages and a draining stop. It is the reference
// the broker adapters are compared with, and it makes examples and unit
// tests run with no broker at all.
//
// Importing the package registers the "memory://" URL scheme and the type
// name "Memory". Adapters that name the same bus share its channels: the
// URL "memory://" (or the type name) uses the process-wide default bus,
// "memory://name" a named bus, and [New] with [WithBus] a bus of your own.
// Two plugins in one program that must talk to each other use the same bus.
//
// A group receives the messages published after it was first subscribed.
// PublishBatch (Plugin.SendBatch) hands a batch to every group in order,
// under one lock.
//
// Messages published to a channel that has no group at all (a dead-letter
// queue nobody reads yet, say) are kept, up to DefaultRetainLimit, and go to
// the first group that subscribes; beyond it a send fails with
// ErrRetainLimit (a dead-letter copy refused that way leaves its message
// pending, to be dead-lettered again a second later). Nothing is persisted:
// a bus lives as long as the process. Headers and raw payloads apply; the
// bus has no options of its own, so any typed channel or send option of an
// adapter package is an error.
package memory
