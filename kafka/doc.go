// Package kafka is the Apache Kafka adapter of channels, on
// segmentio/kafka-go, wire-compatible with the Kafka adapter of
// @moleculer/channels (kafkajs).
//
// # Construction
//
// Importing the package registers the type name "Kafka" and the URL
// schemes kafka:// and kafka+ssl://:
//
//	a, err := kafka.New("kafka://user:secret@10.0.0.1:9092,10.0.0.2:9092?sasl=scram-sha-512&tls=true",
//		kafka.WithChannelOptions(kafka.ChannelOptions{Topic: kafka.TopicOptions{Partitions: 12}}))
//	p, err := channels.New(channels.WithAdapter(a))
//
// A comma list is the bootstrap brokers. User and password select SASL
// PLAIN, or the mechanism of sasl= (plain, scram-sha-256, scram-sha-512);
// tls=true or kafka+ssl:// connect with TLS. Credentials never appear in
// errors, logs or String. WithSASL and WithTLS take kafka-go mechanisms and
// a *tls.Config; WithTransport takes a kafka-go Transport (sends,
// administration) and Dialer (readers, group) for everything else.
// NewFromBrokers takes a broker list.
//
// # Names and wire format
//
// A channel is the topic of its (prefixed) name; a group is the consumer
// group "<group>:<channel>", as @moleculer/channels names it. The payload
// is the record value, headers are native record headers (string values),
// the key is the SendOptions key. Retries and dead letters carry the
// headers @moleculer/channels writes and reads: x-group and
// x-redelivered-count on retry copies, x-original-channel / -group /
// -partition and the x-error-* headers on dead letters. A Go and a Node
// service share a channel in different groups; a group is all-Go or
// all-Node (kafka-go and kafkajs do not share a partition assignment
// protocol).
//
// Topics are created by the adapter, never by the broker's auto-creation:
// the channel's topic (and the dead-letter topic) when a channel is
// subscribed or first sent to, with TopicOptions (Partitions, default 6;
// ReplicationFactor, default the broker's; Configs). The dead-letter topic
// has settings of its own (ChannelOptions.DeadLetterTopic: by default none
// of the channel topic's configs, whose compaction would refuse dead
// letters without a key and whose short retention would drop them). An
// existing topic is used as it is.
//
// # Concurrency and offsets
//
// Each member reads the partitions the group assigns to it and runs up to
// MaxInFlight messages at once across them. By default (Ordering PerKey)
// the messages of one key run one at a time, in order, different keys and
// messages without a key concurrently; Unordered runs up to MaxInFlight
// messages of a partition at once, keyed or not; PerPartition runs a
// partition's messages one at a time. Kafka orders messages per partition
// only: a channel that needs one order for all its messages uses one
// partition (TopicOptions.Partitions 1) or keys.
//
// Offsets are committed every CommitInterval (default 100ms), in one
// request for the partitions that moved, and only up to the first message
// that is not settled: a message that runs long holds the commit of its
// partition (not its reading), and a crash redelivers it with the messages
// after it that had finished (at-least-once; the fault suite counts these
// duplicates).
//
// # Retries and the attempt rule
//
// A failed run of a message without a lane (no key, or an Unordered
// channel) is retried by publishing a copy to
// the channel's topic (same key, hence the same partition for a keyed
// message) with x-group = the group, x-redelivered-count = the failed runs
// and x-retry-not-before = the end of the backoff; the original is settled
// once the copy is acknowledged. Other groups skip the copy without running
// it (as @moleculer/channels does); the member of the group that reads it
// waits out the backoff without taking a slot and without blocking the
// partition's other messages. The attempt of a message is 1 +
// x-redelivered-count, so a copy re-read after a crash keeps its attempt.
// These headers are trusted only on a copy for this group (x-group), and
// clamped: the count to MaxRetries (a copy always runs once more), the
// wait to the channel's longest backoff; a not-before time further past
// the record's timestamp than that backoff (no retry of the channel wrote
// it) is ignored and the message runs at once. x-group cannot be
// authenticated: a producer that forges a copy for this group can hold
// its records for at most the channel's longest backoff each (and, with
// enough of them, the partition's reads and commits for that long). A copy
// whose write is still in flight when the settle times out settles the
// original once the write ends (the copy runs), or runs it again here if
// the write failed; an ambiguous write (a timeout, or the connection lost
// while the answer was awaited, after the request went out) and a
// hand-over while a copy is written can still run a message twice
// (at-least-once). A held copy keeps its place in its key's lane
// while its partition stays with this member.
// On an ordered lane, and when a retry copy cannot be published, the
// message runs again in the process after the backoff and keeps its place
// (its lane and its offset) meanwhile; a crash then restarts its attempts
// from the last copy. A failed dead-letter publish is not committed: the
// message is dead-lettered again after DefaultKeepDelay.
//
// Kafka counts no deliveries, so the adapter counts the runs that never
// ended itself, in the metadata of its offset commits: periodic commits say
// "live", the commit of a member handing its partitions over (rebalance,
// Stop) says "clean". A member that is assigned a partition left "live"
// knows the previous owner died with messages running: it runs the first
// MaxInFlight messages one at a time, committing when each one starts the
// number of its runs so far ("run:<n>", or "run:<n>:<offset>" while an
// earlier message waits), and past it once it is settled, so the count
// stays on the message that ran. A message that kills its consumer each
// time is thus found and, once its runs pass MaxDeliveries, given up
// (dead-lettered with ErrMaxDeliveries) without running, and the partition
// moves on; the other messages of that window run once more at most. A
// commit made while a message may still run (a hand-over wait that gave
// up, a drain past its deadline) keeps the run count or says "live", never
// "clean", and a new generation keeps a run count until the message runs.
// A run handed back unfinished (cut by this member's own stop) is not
// counted, and a clean hand-over of a careful partition whose first
// message has not run here keeps the state it came in with.
//
// # Rebalances and stopping
//
// When the group rebalances (a member joins, leaves or goes silent for
// SessionTimeout), a member stops reading, lets the running messages of
// its partitions finish for up to half of RebalanceTimeout less a
// HeartbeatInterval (ended by a drain's deadline, whether the rebalance began
// before the drain or during it), commits
// what they processed by 3/4 of RebalanceTimeout less a HeartbeatInterval
// and only then rejoins: a partition is never read by two
// members at once, and a message finished before the handover is not run
// again. Meanwhile it keeps heartbeating as a member of the ending
// generation, so a handler longer than SessionTimeout does not get it
// expelled. A message still running after that time is run again by the
// next owner; when that owner is the same member, the new run needs a free
// slot: with MaxInFlight 1 it waits until the abandoned run returns. A
// retry copy still waiting for its backoff is published again
// (unchanged, acknowledged by every in-sync replica) and settled, so the
// commit moves past it and the messages after it are not run again; a
// message held in the process (an ordered channel's retry) keeps its offset
// uncommitted, and the next owner runs it and what follows it. A drain
// (Plugin.Stop) stops reading, waits for the running handlers within its
// deadline, commits and leaves the group, so that the other members take
// the partitions over at once; the last commit and the leave are bounded
// by the same deadline (left to finish in the background after it).
//
// Subscribe commits the start offsets of the partitions the group has none
// for: in a brand-new group the end of each partition (the beginning with
// FromBeginning or Channel.Start StartOldest, the first offset stored at or
// after the time with StartAt), in a group with committed offsets the beginning (a
// partition added since: what producers wrote there is read). A message
// sent after Subscribe returned is never missed while the group forms. In
// a group that has members, the member's first assignment is awaited in
// the background (bounded by RebalanceTimeout, not by the connect
// deadline: the channels of a process join their groups at the same time)
// and reading starts from it, so members subscribed one after the other
// share the partitions before reading; a new or empty group is joined in
// the background as well, so the
// channels of a process join at once (Kafka holds a new group's first
// generation for group.initial.rebalance.delay.ms, 3 s by default).
//
// # Latency
//
// kafka-go's Writer favours throughput: a send waits up to BatchTimeout
// (1s by default) for its batch to fill. The adapter writes with kafka-go's
// produce requests and no lingering instead: a send to an idle partition is
// written at once, and the sends that arrive while a partition's request is
// in flight are written together in the next one (at most WithMaxBatch
// messages), so a lone message waits for no timer and concurrent senders
// share requests. The partitions ready at the same time that have the same
// leader share one produce request, as with the Java client; up to two
// such requests are in flight per broker, and the partitions that get
// ready meanwhile wait for one of them and go together in the next (fewer
// requests, less work for the broker per message). A partition has at most
// one request in flight, so its messages are written in the order of their
// sends, also when a request is tried again: a partition's messages that
// failed with a transient error (a leader moving, a timeout) are tried up
// to 8 times in all, with backoff (about 3.5 s), before their sends report
// the error, each send its own result. A send whose ctx ends while it
// waits in its partition's queue is taken out and never written; one whose
// request is in flight may still be written, and its error says so. The
// sends waiting or in flight are bounded in bytes (DefaultSendBuffer,
// WithSendBuffer): a send that finds the buffer full waits for room within
// its ctx. A fetch returns as soon as one message is there
// (MinBytes 1; MaxWait only bounds an empty long poll). Sends are
// acknowledged by every in-sync replica by default (WithDefaultAcks,
// WithAcks per send).
//
// # Send options
//
// WithKey, WithPartition, WithAcks, WithCompression and WithTimeout (or a
// SendOptions value in channels.WithSendOptions) shape one send. Plugin.SendBatch
// writes a batch in shared produce requests with one result per message.
//
// # Operations tooling
//
// The adapter is a broker.DeadLetterStore, a broker.Tailer and a
// broker.ChannelLister (package dlq and the channels command use them);
// it is not a broker.MessageRemover: Kafka cannot delete one record.
// Every read of these is made with fetch requests of the adapter's own,
// with no group and no commit, so no group's position changes.
//
// BrowseDeadLetters reads the dead-letter topic from the first offset of
// each partition to its end when the call started, oldest first across
// partitions (record time, then partition); ID is "partition/offset",
// Time the record's time. RemoveDeadLetters cannot delete records: it
// writes one marker record per removed dead letter (key: its ID),
// acknowledged by every in-sync replica, to the compacted topic
// "<dead-letter topic>.removed" (RemovedTopic; one partition, created at
// the first removal), and browses leave the marked records out (a marker
// holds the record's time and hides only a record with that time at that
// position, so a topic deleted and created again under the same name
// keeps its new records). An ID is
// counted once its marker is acknowledged, so a reported removal survives
// a crash. The records stay in the topic until its retention drops them
// (the next removal then deletes their markers): a service consuming the
// dead-letter topic as a channel still receives them. Each browse reads
// the markers first (one record per removal). Headers are read as the
// consumers read them; a record with more than broker.MaxHeaders headers
// or more than broker.MaxHeadersSize bytes of them is listed with the
// headers that fit and HeaderHeadersCut.
//
// Tail reads each partition from its end when Tail started (partitions
// added meanwhile are not read). Channels lists the topics by prefix
// (internal topics and the removal markers left out) with the records
// they hold (end less first offset of each partition) and the consumer
// groups named "<group>:<topic>", listed on every broker, with their Lag.
package kafka
