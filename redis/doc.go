// Package redis is the Redis Streams adapter of channels, for a single
// Redis node or a Redis Cluster (Redis >= 6.2), built on go-redis v9.
//
// Importing it registers the "redis://" and "rediss://" URL schemes and the
// type name "Redis":
//
//	import _ "github.com/microchannels/channels/redis"
//	p, err := channels.New(channels.WithAdapter("redis://:secret@127.0.0.1:6379/0"))
//
// Construction: [New] from a URL (user, password, database, TLS with
// rediss://; a cluster with redis://host1:7001?addr=host2:7002&addr=host3:7003),
// [NewFromOptions] from go-redis universal options, [NewFromClient] with a
// client you own (Close leaves it open). [WithClusterAddrs] and [WithTLS]
// adjust URL-built options. The clients the adapter builds speak RESP2
// ([DefaultProtocol]) unless the URL (protocol=3) or the options ask for
// RESP3: the adapter uses no RESP3 feature, and go-redis checks RESP3
// connections for pending push notifications before every command.
//
// # TLS, authentication and what String shows
//
// rediss:// connects with TLS 1.2 or later, verifying the server's
// certificate against the URL's host (for a cluster, against the host each
// connection dials); [WithTLS] replaces that configuration (the adapter
// uses it as given, without changing it). rediss://...?skip_verify=true
// (a go-redis URL option) turns certificate verification off: anyone on the
// path can then read and change the traffic, password included; keep it to
// tests. Authentication is the URL's user and password (AUTH, Redis ACL
// users with a user name); escape "#", "/", "?" and "@" in a password
// (%23, %2F, %3F, %40): a URL whose userinfo url.Parse would misread is
// refused. String() and the adapter's errors show the scheme and hosts only
// ("redis redis://10.0.0.1:6379"), never the userinfo or the query.
//
// Redis keeps the counts: a message's attempt and deliveries come from the
// pending-entries list and the adapter's failure record on the server
// (keyed by stream, group and entry id), never from headers a producer
// wrote; x-redelivered-count, x-group and the x-error-* headers of an
// entry are data to the adapter (a dead-letter copy gets its own).
//
// # Wire format (shared with @moleculer/channels)
//
// Channel n with prefix P is the stream "P.n"; a group g is the consumer
// group g. An entry has the field "payload" (the serialized payload) and,
// when there are headers, the field "headers" (the header map serialized
// with the same serializer), in that order. A dead-lettered copy goes to the
// stream of the dead-letter queue with the same fields; its headers carry
// x-original-id (the original stream id) besides the shared x-original-*
// and x-error-* headers. Consumer names are "<node id>.<service>.<channel>"
// (the plugin makes the node id unique per plugin of a process: <id>,
// <id>-2, ... in connect order), stable per node and channel; a consumer is deleted from the group when it
// stops holding nothing, and a live member deletes the consumers that hold
// nothing and were idle longer than StaleConsumerAge (those of crashed
// processes).
//
// # Consumer options
//
// [ChannelOptions] set adapter-wide with [WithChannelOptions] and per
// channel in Channel.AdapterOptions (a value of another type there is an
// error):
//
//	ReadTimeout        XREADGROUP BLOCK time                      DefaultReadTimeout   2s
//	MinIdleTime        idle time before another member claims     DefaultMinIdleTime   30s
//	ClaimInterval      maintenance loop period (retry resolution) DefaultClaimInterval 250ms
//	HeartbeatInterval  idle-time refresh of held messages         MinIdleTime/3
//	StartID            where a new group starts (Channel.Start    DefaultStartID       "$"
//	                   sets it: "$", "0", the id before a time)
//	StaleConsumerAge   idle time before an empty consumer is      DefaultStaleConsumerAge 1h
//	                   deleted from the group
//	ErrorInfoTTL       lifetime of a message's failure record     DefaultErrorInfoTTL  24h
//	AckBatch           ids per XACK                               DefaultAckBatch      256
//
// Send options: headers (the "headers" field), raw payloads, and the typed
// [SendOptions] of this package ([WithMaxLen](n, approx) adds XADD MAXLEN:
// capped streams, the xaddMaxLen of @moleculer/channels; [WithDefaultMaxLen]
// sets it for every send of the adapter, default none; trimming can remove
// entries a group has not read, so use it only where losing the oldest
// entries is acceptable). A send option of another adapter's type is an
// error.
//
// Batch sends (Plugin.SendBatch, PublishBatch): one pipeline of XADDs per
// BatchPipeline (512) messages, the rounds one after the other, so the batch
// is appended in order; each XADD's reply is its message's result. It is
// not a transaction: a failure leaves the part of the batch that was
// appended, and the errors say which part. On a Cluster a batch names one
// stream, so it goes to the node of one slot.
//
// # Replication and clusters
//
// Redis replicates asynchronously: by default a send returns once the
// master appended the entry, and a master lost before its replica got it
// (a failover) loses it. [WithWaitReplicas](n, timeout) (adapter-wide) and
// [WithReplicas](n, timeout) (one send; SendOptions.WaitReplicas, -1 for no
// wait) make a send return only once n replicas acknowledged it: the XADD
// and WAIT n timeout go in one pipeline on one connection to the master of
// the stream's slot (on a Cluster: MOVED and ASK followed, and after
// READONLY, CLUSTERDOWN, TRYAGAIN, LOADING or a dead master the slot map is
// reloaded and the send goes again, until its context ends). Default: no
// wait. Timeout default: [DefaultWaitTimeout]; it must be shorter than the
// client's read timeout. A WAIT that reaches fewer replicas in time makes
// the send fail with a *broker.PublishError holding a *[ReplicationError]:
// the message was written and may or may not survive a failover. WAIT is
// no consensus: it guarantees that n replicas hold the message in memory,
// not that the replica a failover promotes is one of them (with one replica
// per master and n = 1, it is). Dead-letter copies wait for the adapter's
// replicas before the original is acknowledged; one that reaches too few
// counts as a failed dead-letter publish (the original stays pending and is
// dead-lettered again: the copy may be there twice). Acks, claims and
// failure records do not wait: one lost in a failover means a redelivery.
// A batch round waits for the largest count its messages ask for.
//
// The Cluster clients the adapter builds reload their slot map as soon as a
// command meets a dead node, CLUSTERDOWN or READONLY (go-redis alone waits
// for a MOVED reply or ClusterStateReloadInterval, 60 s), so reads,
// heartbeats, claims and acks reach the promoted replica within a second or
// two; a client given to [NewFromClient] is left as it is.
//
// # How deliveries are handled
//
// Each subscription is the kit's delivery skeleton (kit.Consumer and
// broker.Channel.Deliver: the attempt rule, the outcome, the drain); this
// package adds what only Redis does, one concern per file: the blocking
// read (reader.go), ownership, heartbeat and claims (claim.go), batched
// acks (acks.go) and failure records (records.go).
//
//   - New messages are read with XREADGROUP while fewer than MaxInFlight
//     entries wait for a slot, so a read is already blocked when the
//     handlers send. Each entry takes its own
//     slot and frees it when settled: no batch holds slots, and at most
//     MaxInFlight handlers run. Entries read beyond the free slots wait, in
//     order, for the next slot (a read-ahead of at most MaxInFlight); the
//     heartbeat keeps them from being claimed meanwhile.
//   - Attempts: the pending entry's delivery counter counts deliveries,
//     including those whose run never ended (a killed consumer); the
//     failed runs are counted in a failure record, the hash
//     chan:<stream>:<group>:msg:<id> (failures, the x-error-* headers of the
//     last failure, and "final" when its dead-letter publish failed), written
//     only on the failure path, deleted with the ack, expiring after
//     ErrorInfoTTL. A message's attempt is 1 + its failed runs, so a crash
//     uses up no attempt (with NoRetries too); its delivery counter bounds a
//     message that keeps killing its consumers (MaxDeliveries).
//   - A failed message with retries left is recorded, then handed back to
//     the group: its idle time is set (XCLAIM ... IDLE ... JUSTID, which
//     counts no delivery) so that it becomes claimable by any member exactly
//     when its backoff delay ends.
//   - One maintenance loop per subscription refreshes the idle time of the
//     messages this consumer holds and still owns (a script checks the owner
//     of each entry, so a message another member claimed after a missed
//     heartbeat is left to it), scans the whole pending list (paged) for
//     entries idle longer than MinIdleTime, claims them atomically (XCLAIM
//     with MinIdleTime) as far as there are free slots, reads their failure
//     record and hands them to the kit, which runs them or gives them up.
//   - An entry without a payload field, or with headers that do not decode,
//     is poison: dead-lettered at once (or dropped), never retried.
//   - Acks are batched: whatever is queued goes in one pipelined XACK, with
//     the deletion of the failure records of retried messages. While
//     messages flow, the acks go in the same pipeline as the fetch loop's
//     next XREADGROUP (no round trip of their own; 10 ms at most); when the
//     read has been blocked for a millisecond (nothing flows), and on a
//     client you own (NewFromClient), they are sent at once. An entry stays
//     held (heartbeated, never claimed) until its XACK succeeded; an XACK
//     that fails for the connection is retried until Redis answers while
//     the subscription runs, and 5 times once it stops.
//   - The heartbeat goes on while a stop waits for slow handlers, so their
//     entries are not claimed by another member meanwhile.
//   - A dead-letter copy is written with XADD before the original is
//     acknowledged; if the XADD fails the original stays pending with its
//     failure recorded as final, and after MinIdleTime it is dead-lettered
//     again from that record, without running the handler.
//   - Drain stops reading at once: the blocking read has a dedicated
//     connection, which Drain ends with CLIENT UNBLOCK (the read returns as
//     if it had timed out, so nothing Redis delivered at that moment is
//     lost in a closed socket); without CLIENT permission it closes the
//     connection instead, and an entry caught in that read waits
//     MinIdleTime. With a client given to [NewFromClient] the read shares
//     its pool and ends within ReadTimeout. Drain then waits for the running
//     handlers (bounded by its ctx; then their context is cancelled and
//     their messages are released), flushes the acks, and hands back what it
//     read but did not run, with the delivery counter of that read undone
//     (XCLAIM ... RETRYCOUNT), so another member takes it at once. Messages
//     waiting for a retry become claimable when their backoff ends. The
//     consumer is deleted from the group (XGROUP DELCONSUMER) only when it
//     holds no pending entry. Every step is bounded by the drain's context.
//
// # Operations tooling
//
// The adapter has the optional abilities of broker/tooling.go, for package
// dlq and the channels command; they join no group and acknowledge nothing.
// A message ID is its stream entry ID ("1700000000000-0") and its Time the
// milliseconds of that ID; an ID of another form is not found.
//
//   - BrowseDeadLetters reads the dead-letter stream with XRANGE, in pages
//     of BrowsePage entries (one round trip each), from the first entry to
//     the last one present when the call started. Entries are decoded as
//     the consumer decodes them: one without a payload field has a nil
//     Payload, one whose headers do not decode (malformed, over
//     MaxHeadersSize or MaxHeaders) has nil Headers; both are listed.
//   - RemoveDeadLetters and RemoveMessage delete entries with XDEL. An entry
//     removed from a channel is gone for every group that has not read it
//     yet (one being handled still runs to its end).
//   - Tail reads with XREAD (no group) after the last entry present when it
//     started (also for a stream created later), TailPage entries and at
//     most TailBlock per read; a context without a deadline is seen within
//     TailBlock.
//   - Channels lists every stream whose name starts with the prefix (SCAN
//     ... TYPE stream, on every master of a Cluster; dead-letter streams
//     included), with XLEN and, per group, XINFO GROUPS's pending count and
//     lag (-1 before Redis 7, which does not tell it). It costs one SCAN of
//     the keyspace and one pipelined round trip per 100 streams.
package redis
