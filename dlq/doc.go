// Package dlq is the operations API over what a broker holds for the
// channels plugin: list, show, replay, move and purge dead letters, list
// channels with their groups' backlogs, follow a channel and delete one of
// its messages. The channels command (cmd/channels) is a thin layer over it.
//
// Every function takes a connected broker.Adapter and full broker-side
// names (namespace applied: QueueName and channels.QualifiedName build
// them). Each needs an optional ability of the adapter (package broker:
// DeadLetterStore, ChannelLister, Tailer, MessageRemover); an adapter
// without it gets an error wrapping broker.ErrUnsupported that names the
// adapter and the ability. Nothing here joins a consumer group or takes a
// message from one.
//
// Dead letters are read from their headers: x-original-channel and
// x-original-group (where the message failed), x-error-message,
// x-error-name and x-error-timestamp (the failure), x-redelivered-count
// (Entry.Attempts is that plus one). Dead letters of @moleculer/channels
// 0.1, which carry only x-original-channel and x-original-group, are
// listed too, with no error, no attempt count and the broker's storage time.
//
// Replay sends dead letters back as new messages: on their first attempt
// (the failure headers are left out), with their payload byte for byte,
// and with an x-replayed-from trail (HeaderReplayedFrom, a bounded JSON
// array of Trail records). A dead letter is removed only once the broker
// accepted its copy, a page at a time: a replay stopped anywhere sends the
// messages of one page twice at worst and never loses one. Before anything
// is sent, each dead letter is checked: one that could not be read whole,
// has no destination or a refused one (its own queue, out of the
// namespace) stops the replay, or is skipped and reported with
// ContinueOnError. Move does the same into
// another queue and keeps the dead letter as it is (failure headers
// included). Purge removes dead letters.
//
// A replayed message is a new message of its channel: every group of the
// channel gets it, also those that handled the original; on Kafka
// ReplayOptions.Group and OriginalGroup send it to one group. A copy keeps
// the message key: Kafka's record key (Entry.Key), else the portable key
// of its x-channels-key header.
//
// Filters match on the headers (Filter): the original channel (a full
// name), the time, a substring of the error, IDs, and a limit.
package dlq
