// Package jetstream is the NATS JetStream adapter of channels, on durable
// pull consumers (nats.go's jetstream package for streams, consumers and
// publishing; the pull requests on the JetStream protocol itself),
// wire-compatible with the NATS adapter of @moleculer/channels.
//
// # Construction
//
// Importing the package registers the type name "NATS" and the URL schemes
// nats:// and tls:// (tls:// requires TLS):
//
//	a, err := jetstream.New("nats://user:secret@10.0.0.1:4222,nats://10.0.0.2:4222",
//		jetstream.WithCredentials("/etc/nats/app.creds"),  // or WithNKeyFile, WithTLS, WithRootCAs, WithClientCert
//		jetstream.WithChannelOptions(jetstream.ChannelOptions{AckWait: time.Minute}))
//	p, err := channels.New(channels.WithAdapter(a))
//
// A comma-separated list is the server list of one cluster. User, password
// and token in a URL are used to connect and never appear in errors, logs
// or String. NewFromClient takes an existing *nats.Conn whose lifetime the
// caller keeps (Close flushes it and leaves it open). WithNATSOptions passes
// any nats.Option. An adapter-owned connection reconnects forever and does
// not buffer while disconnected, so a send fails at once (a
// *broker.PublishError) instead of waiting for a server that may not come.
// The package github.com/microchannels/channels/jetstream/embedded runs a
// NATS server inside the process (nats-embedded:// URLs).
//
// # Options
//
// ChannelOptions apply adapter-wide (WithChannelOptions) or per channel (a
// ChannelOptions value in the channel's AdapterOptions); a zero field takes
// the adapter value, then the default. A value of another adapter's type is
// refused with ErrInvalidOption.
//
//	field               default                          meaning
//	AckWait             DefaultAckWait (30s)             a message held that long without ack or progress (a crashed member's) is redelivered
//	InProgressInterval  AckWait/3                        how often running messages are reported in progress (msg.InProgress); follows the consumer's live AckWait
//	MaxDeliver          max(1000, MinMaxDeliver)         the consumer's MaxDeliver: the server's backstop for a message that never reaches the kit (-1: none; under MinMaxDeliver: *MaxDeliverError)
//	MaxAckPending       max(DefaultMaxAckPending, 2 MIF) unacked messages of the whole group, messages in backoff included
//	DeliverPolicy       DeliverNew                       where a new group starts: DeliverAll, DeliverLast, DeliverLastPerSubject, DeliverByStartSequence (StartSequence), DeliverByStartTime (StartTime); Channel.Start maps to DeliverNew, DeliverAll, DeliverByStartTime for a new consumer only
//	FetchTimeout        DefaultFetchTimeout (5s)         expiry of one pull request (a stop ends it at once)
//	AckSync             false                            confirm each ack with a round trip (double ack)
//	Stream              server defaults                  StreamOptions: Name, Subjects, MaxAge, MaxMsgs, MaxBytes, MaxMsgSize, Discard, Retention, Storage, Replicas, Duplicates, Configure
//	DeadLetterStream    limits retention, MaxAge 7 days, MaxMsgs 100000  StreamOptions of the dead-letter stream (the channel's Stream options do not apply to it; the bounds are for a stream the adapter creates: an existing one keeps its own)
//
// Adapter options: WithRecords(bucket, ttl) (DefaultRecordsBucket,
// DefaultRecordTTL) for the failure records. DefaultKeepDelay and
// DefaultOpTimeout are fixed.
//
// Streams and consumers are created when missing and updated when a set
// option differs from them; an option left unset keeps what exists (so
// members need not repeat the settings of a group). A change the server
// cannot make — the storage or retention of a stream, the deliver policy or
// start position of an existing group — is a *ConfigError wrapping
// ErrUpdateNotAllowed, returned by Subscribe (so by the plugin's Start).
//
// Send options: WithMsgID (Nats-Msg-Id: a second message with that id
// within the stream's Duplicates window, 2 minutes by default, is stored
// once and the send succeeds), WithExpectLastSequence and
// WithExpectLastMsgID (the send fails with ErrPublish when the stream has
// moved on), or a SendOptions value in broker.WithAdapterOptions.
//
// Batch sends (Plugin.SendBatch, PublishBatch) publish asynchronously, in
// order, at most BatchWindow (256) messages awaiting their acknowledgement
// at a time, and wait for every acknowledgement, bounded by the send's ctx.
// A message id shared by several messages of one batch is refused for each
// of them (ErrInvalidOption): the stream would keep only the first. Give
// each message its own with BatchItem.Options.
//
// # Replication and clusters
//
// A send returns after the stream's PubAck; on a replicated stream the
// leader sends it once a majority of the replicas stored the message, so an
// accepted send survives the loss of a minority of them, and a send through
// a node cut off from the majority fails (no PubAck) rather than being
// accepted and lost. [WithReplicas](n) sets the replicas of the channels'
// streams and dead-letter streams whose StreamOptions leave Replicas unset,
// and of the failure-record bucket when the adapter creates it. The
// default, 0, is the server's single replica, not the cluster's size: the
// client is not told how many JetStream servers a cluster has, JetStream
// may run on some of them only, and each replica adds a quorum round trip
// to every send. A count above the cluster's JetStream servers is never
// lowered: Start fails with the server's error. A connection JetStream
// leaves unanswered for [RehomeAfter] (its server cut off from the rest of
// the cluster) is moved to another server the adapter knows.
//
// # Wire format
//
// Names and headers are those of @moleculer/channels 0.1.8 (namespace P,
// channel n, group g, dead-letter queue Q): stream P_n (dots, and the other
// characters a stream name cannot hold, turned into underscores; StreamName)
// storing subject P.n; a durable consumer g with dots turned into
// underscores (DurableName), filtered on P.n, explicit acks; dead letters
// published to subject P.Q, stored by stream P_Q. A send to a channel that
// has no stream yet creates it, so messages sent before any group subscribed
// are stored (a new group still starts with the messages after it); a send
// with broker.PublishOptions.Routed (the operations tooling's copies)
// creates none and fails with an error wrapping broker.ErrNotFound when no
// stream stores its subject. Headers
// are NATS headers, one value per name, names kept as they are
// (x-redelivered-count, x-original-*, x-error-* with base64 stack and data,
// $requestID, $parentID, $meta, ...). A send is refused with a
// *broker.PublishError wrapping ErrHeaderRefused when a header name is
// empty or holds a space, a colon or a control character, when a value
// holds CR or LF, or when a message with an empty payload has a header
// named Status, exactly (NATS clients take such a message for a status of
// the server; Description alone, another case or a payload are read as a
// message);
// with headers over MaxHeaderBytes (JetStream stores at most 64 KiB of
// headers) or a message over the server's max_payload it is refused with
// ErrTooLarge (Limits). NATS transport headers (Nats-Msg-Id,
// Nats-Expected-*) are left out of Message.Headers and of dead letters
// (Message.Raw, the jetstream.Msg, has them). Message.ID is the stream
// sequence, Message.Timestamp the time the stream stored it.
//
// # Retries, attempts, dead letters
//
// Each subscription keeps one pull outstanding for up to MaxInFlight
// messages beyond the running ones: a message published while the handlers
// run is delivered at once and waits, in order, for the next free slot (a
// read-ahead of at most MaxInFlight, as on every adapter that fetches). Held
// and running messages are reported in progress every InProgressInterval,
// so a handler longer than AckWait keeps its message, and a stop hands back
// the held ones unrun (no attempt used). Each pull request asks for the
// messages that may be held, within the consumer's MaxRequestBatch and
// MaxRequestExpires, with an idle heartbeat (half the expiry, at most 5 s:
// a pull that hears nothing for twice that is made again), answered on one
// standing inbox subscription per subscription. Every message is tracked
// (reported in progress) from its arrival, whichever request it answers,
// including one the client gave up on (its heartbeats missed, its expiry
// passed during a reconnect) that the server still answered. The
// in-progress reports follow the consumer's AckWait as the server has it:
// a change made by another member (seen on the consumer's API subjects)
// lowers the interval at once to the AckWait (or shorter BackOff step) the
// request asks for, reports the running messages and reads the consumer
// again (after 100 ms, 0.5 s, 1 s and 2 s); the consumer is also read
// every AckWait/2 (at least 5 s) while messages run, and a consumer
// created again under the same name (its Created time, or a consumer
// sequence going back) gets failure records of its own. A subscription
// listens on its consumer's create subjects
// ($JS.API.CONSUMER.CREATE.<stream>.<durable>[.>] and
// $JS.API.CONSUMER.DURABLE.CREATE.<stream>.<durable>): while JetStream is
// unavailable on the account, a create request for that consumer from
// another member (its Subscribe) finds that interest and waits for its
// timeout instead of failing at once with no responders. A message is a stream
// message when its reply subject is a JetStream acknowledgement subject,
// whatever its headers, so a stored empty message with a Status header (which
// nats.go's own pull consumers take for a status of the server and never
// hand over) reaches the handler and is settled like any other. A failed run is
// retried with NakWithDelay(backoff): the server redelivers it to any
// member after the delay, and a redelivery due goes before new messages.
// A message in backoff stays pending on the server, which is why
// MaxAckPending is not MaxInFlight: with MaxAckPending = MaxInFlight one
// message in backoff would stop the group.
//
// JetStream counts deliveries (NumDelivered), not failed runs: a nak and an
// AckWait expiry after a crash look the same. The adapter therefore keeps,
// per group and message, a failure record in a key-value bucket
// (DefaultRecordsBucket, key <stream>.<durable>.<consumer creation
// time>.<sequence>, so a stream or group created again never sees the
// records of the one before): the failed runs,
// the deliveries handed back unrun (a release is a Nak, which the server
// counts), the x-error-* headers of the last failure and whether it was final.
// Records are written only on the failure path, read only for a message
// delivered more than once, deleted with the ack and expire after
// DefaultRecordTTL. So: Message.Attempt = 1 + failed runs; a crash uses no
// attempt (the message comes back after AckWait with the same attempt, also
// with NoRetries); the deliveries the kit checks against MaxDeliveries are
// NumDelivered less the releases, which bounds a message that keeps killing
// its consumers (a poison pill). The consumer's own MaxDeliver
// (DefaultMaxDeliver, at least MinMaxDeliver: four times MaxDeliveries) is
// only the server's backstop: a message past it is no longer delivered (it
// stays in the stream; each member logs the server's MAX_DELIVERIES
// advisory at Error). A long dead-letter outage keeps a message coming back
// every DefaultKeepDelay and can reach it: watch for that log, or use -1. A record that
// cannot be read counts from NumDelivered, and is read again before it is
// written (a record is never started over from zero).
//
// After the last attempt the message is published to the dead-letter
// subject with JetStream's acknowledgement, with its payload, its original
// headers and the x-original-* and x-error-* headers, and a Nats-Msg-Id
// (a publish tried again after a lost acknowledgement is stored once), and
// only then acked. The dead-letter stream has its own options
// (DeadLetterStream) and limits retention unless they ask otherwise (an
// existing one with interest retention is turned to limits: with no
// consumer it would acknowledge dead letters without storing them). The
// kit fits the copy's x-error-* headers into the server's max_payload, the
// dead-letter stream's MaxMsgSize and MaxHeaderBytes. When that publish
// fails, the final failure is recorded (Final, with the count of refusals)
// and the message is nakked with DefaultKeepDelay: it comes back and is
// dead-lettered without running; after MaxDeliveries refusals it is
// dropped with an error log (broker.ErrDeadLetterRefused). Acks are written on the connection (a
// flush per batch of writes; AckSync for a confirmed ack); a stop flushes
// them.
//
// # Drain
//
// Stop cancels the pull at once; messages that arrive after it are handed
// back unrun (Nak, recorded as a release: no attempt and no delivery used
// up; one the server sent just as the pull ended comes back after AckWait,
// with its attempt unchanged), running handlers finish (bounded by the stop's context, their
// messages are released when it ends), acks are flushed, and the consumer
// stays (it is durable: the group's backlog waits for its next member).
// Close is bounded by its context: once it has ended nothing is flushed
// and the connection's close is left to finish in the background
// (broker.AbandonedError). On a connection of the caller's (NewFromClient)
// Close removes what the adapter added to it.
//
// RemoveChannel drains this adapter's subscriptions of the channel, then
// deletes its stream, its groups and their failure records.
//
// # Operations tooling
//
// The adapter (and the embedded one) has the optional abilities of
// broker/tooling.go, for package dlq and the channels command. A channel or
// dead-letter queue is a subject, found in whichever stream stores it (a
// shared stream too); a message ID is its stream sequence ("42"), its Time
// the time the stream stored it, its headers those a consumer sees (first
// value of each, no Nats-* header).
//
//   - BrowseDeadLetters reads the queue's messages one API request each
//     ($JS.API.STREAM.MSG.GET with next_by_subj), from the stream's first
//     sequence to its last one when the call started: no consumer, so
//     nothing is delivered, acknowledged or removed whatever the stream's
//     retention. A message whose header block does not decode is listed
//     with nil Headers. A browse costs one round trip per message.
//   - RemoveDeadLetters and RemoveMessage read the message (it must be
//     stored on that subject: in a shared stream a sequence of another
//     subject is not found) and delete it (stream message delete): two
//     round trips per ID. A message removed from a channel is gone for
//     every group that has not received it yet.
//   - Tail reads with an ordered consumer (ephemeral, no acks, removed when
//     Tail returns) filtered on the channel, delivering what is stored after
//     it started; for a channel without a stream yet it looks for the
//     stream every TailPoll and reads it from its start. A work-queue stream
//     refuses that consumer (Tail returns the error).
//   - Channels lists the streams of the account (paged), and lists as
//     channels their literal subjects and the subjects stored under their
//     wildcard subjects, except those starting with "$" (key-value buckets
//     such as the failure records, object stores). Groups are the durable
//     consumers whose filter covers the channel, named as the durables are
//     (DurableName: dots turned into underscores), with NumPending as the
//     lag and NumAckPending as pending; a consumer filtered on several
//     subjects reports its backlog for all of them.
//
// # @moleculer/channels 0.1.8
//
// Node 0.1.8 makes a push durable consumer named after the group (with a
// deliver subject and a queue group); a pull consumer cannot join it, and
// Subscribe returns ErrPushConsumer for such a group. Go and Node services
// therefore share a stream in different groups: each group gets every
// message. Both directions work with headers and context ($meta); Node
// reads every header of a Go dead letter (x-error-* included) as plain
// headers. Node 0.1.8 dead letters carry only x-original-channel and
// x-original-group (its original headers and $meta are dropped, and it
// writes no x-error-*); it retries with an immediate nak and counts
// attempts from the delivery counter.
package jetstream
