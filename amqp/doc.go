// Package amqp is the RabbitMQ (AMQP 0-9-1) adapter of channels, on
// github.com/rabbitmq/amqp091-go, wire-compatible with the AMQP adapter of
// @moleculer/channels 0.1.8.
//
// # Construction
//
// Importing the package registers the type name "AMQP" and the schemes
// amqp:// and amqps://, so channels.WithAdapter("amqp://user:pass@host:5672/vhost")
// works. Build one yourself for options:
//
//	a, err := amqp.New("amqps://user:secret@rabbit-1:5671/;amqps://user:secret@rabbit-2:5671/",
//		amqp.WithTLS(tlsConfig))
//
// A ';'-separated list is a failover list: each connection attempt takes the
// next URL. amqp.NewFromClient(conn) uses a connection you dialed; you
// keep its lifetime (Close leaves it open, and a lost connection is not
// dialed again). String() and errors show the scheme and host of each URL
// only; a URL whose user name or password holds an unescaped / # ? @ is
// refused (percent-encode them: the parser would take part of the password
// for a port or a path).
//
// TLS: amqps:// URLs dial TLS (with a default configuration, or the one of
// WithTLS or WithConfig); a TLS configuration with an amqp:// URL is refused
// (amqp091 would dial it in plaintext, credentials included). The
// configuration is cloned for each dial, so each host of a failover list is
// verified against its own name and the caller's value is never changed.
//
// # Options
//
// Adapter options: WithChannelOptions (queue, exchange and consumer
// options for every channel), WithQueueType, WithTLS, WithConfig
// (amqp091.Config: vhost, heartbeat, SASL...), WithPublisherChannels,
// WithPublishAssertExchange, WithReconnectBackoff, WithManagementURL. A channel overrides the queue, exchange and consumer
// options field by field with a ChannelOptions value in its AdapterOptions;
// a value of another type is an error (broker.ErrInvalidOption).
//
//	option                              default                         meaning
//	ChannelOptions.QueueType            QueueQuorum                     type of new group queues (see Queue types)
//	ChannelOptions.Queue                durable, no arguments           group queue declaration (arguments merged
//	                                                                    over the quorum ones)
//	ChannelOptions.Exchange             DefaultExchangeType "fanout",   channel exchange declaration
//	                                    durable
//	ChannelOptions.Consumer             not exclusive, no arguments     basic.consume arguments (x-priority, ...)
//	ChannelOptions.BindingKey           ""                              binding of the group queue to the exchange
//	ChannelOptions.DeadLetterQueue      the adapter-wide Queue options  dead-letter queue declaration
//	prefetch                            the channel's MaxInFlight       basic.qos of the consumer's own channel
//	WithPublisherChannels               DefaultPublisherChannels (4)    confirm-mode channels the sends share
//	WithPublishAssertExchange           true                            declare a channel's exchange before its first send
//	WithReconnectBackoff                100 ms doubling to 5 s          pace of reconnections and consumer resumptions;
//	                                                                    reset once a connection lived StableAfter (10 s)
//	WithManagementURL                   http://<AMQP host>:15672, the   management HTTP API that Channels asks
//	                                    AMQP user and password
//	heartbeat, dial timeout             DefaultHeartbeat (10 s),        connection liveness, one connection attempt
//	                                    DefaultDialTimeout (30 s)
//	retry queue lease (x-expires)       max(DefaultRetryQueueLease      an unused retry queue is deleted by RabbitMQ
//	                                    (10 min), 2×delay + 1 min)
//	kept dead letter, failed settle     DefaultKeepDelay (1 s),         waits before a message is dead-lettered
//	                                    DefaultSettleFailureDelay (1 s) again, or handed back after a failed settle
//
// Send options (SendOptions, or the helpers WithRoutingKey, WithQueue,
// WithPriority, WithExpiration, WithTransient, WithCorrelationID,
// WithMessageID, WithMandatory): messages are persistent by default;
// WithQueue(q) sends straight to queue q through the default exchange
// (@moleculer/channels' channel name "" with a routing key); WithMandatory
// makes an unroutable message a *broker.PublishError (caused by a
// *ReturnedError) instead of a silent drop. A send with
// broker.PublishOptions.Routed (the operations tooling's copies) is
// mandatory and does not declare the exchange: a returned message, or one
// to an exchange that does not exist, fails with an error wrapping
// broker.ErrPublish and broker.ErrNotFound (RabbitMQ confirms a message no
// queue receives when it is not mandatory). A dead-letter queue Q is
// reached by a routed send to channel Q (the fanout exchange Q binds it).
//
// Batch sends (Plugin.SendBatch, PublishBatch) publish every message on one
// confirm channel without waiting, at most BatchWindow (512) unconfirmed at
// a time, then wait for every confirm: the batch keeps its order, and each
// message gets the outcome a single send would (confirmed, nacked,
// returned, unconfirmed when the channel closed first). A batch holding a
// mandatory message takes a channel of the mandatory pool to itself while
// it runs, and tells its returns apart by message id; so a message id given
// to several messages of one batch is refused for each of them
// (ErrInvalidOption).
//
// # Queue types
//
// A new group queue is a quorum queue (RabbitMQ's recommended type:
// replicated, and it counts deliveries) declared with
//
//	x-queue-type            quorum
//	x-delivery-limit        the channel's MaxDeliveries (MaxRetries + 1 + 5 by default)
//	x-dead-letter-exchange  the exchange named like the dead-letter queue (dead-lettering on)
//	x-dead-letter-strategy  at-least-once (with a dead-letter exchange; RabbitMQ 3.10+)
//	x-overflow              reject-publish (which at-least-once needs)
//
// so that a message no client can read (a header table amqp091 refuses:
// nested deeper than 32, or wider than 8,192 entries; it closes the
// consuming connection on every delivery, before the adapter sees the
// message) is dead-lettered by RabbitMQ itself once it was delivered more
// than MaxDeliveries times; without dead-lettering it is dropped. Meanwhile
// the consuming connection is dialed again with a growing backoff (it is
// reset only once a connection lived StableAfter), and sends go on: they
// have a connection of their own. A message the adapter can read is given
// up by the adapter first, with its own headers.
//
// QueueType QueueClassic (or WithQueueType(QueueClassic)) declares classic
// queues with no x-queue-type, as @moleculer/channels 0.1.8 does: use it
// for a group shared with Node members (0.1.8 declares its group queue
// without arguments, which RabbitMQ refuses for a quorum queue), or give
// the Node side the same arguments. Queue options only a classic queue
// takes (not durable, exclusive, auto-delete, x-max-priority,
// x-queue-mode) make the default classic; with QueueType QueueQuorum they
// are an error. An x-queue-type in Queue.Arguments takes precedence.
//
// Without at-least-once RabbitMQ dead-letters at most once (a dead letter
// the dead-letter queue does not take is lost). RabbitMQ older than 3.10
// (the server property "version") has neither at-least-once dead-lettering
// nor message TTL on quorum queues: there the group queue is declared
// without x-dead-letter-strategy and x-overflow, and retry queues are
// classic.
//
// RabbitMQ cannot change the type or arguments of an existing queue (a
// declaration that differs fails with PRECONDITION_FAILED, naming the first
// argument that differs). A group queue that exists with other arguments (a
// classic queue declared by an earlier version or by Node, with or without
// a dead-letter exchange; a quorum queue with another delivery limit, or
// declared before the adapter added x-dead-letter-strategy, which then
// dead-letters at most once) is used as it is, declared passively, with a
// warning naming the queue, its type and RabbitMQ's reason: nothing changes
// for existing deployments. Its type is found by declaring it again with
// each differing argument set to the queue's value, until RabbitMQ names
// x-queue-type or takes the declaration; the adapter counts deliveries
// itself on a queue that is not quorum (or whose type it cannot tell). To
// move a group to a quorum queue, or to the arguments this version
// declares, drain it, delete the queue once it is empty, and start again.
// When QueueType (or x-queue-type) is set explicitly, a queue of another
// type is an error instead. Retry queues get the type of their group queue;
// quorum retry queues also dead-letter at least once (x-dead-letter-strategy
// at-least-once, x-overflow reject-publish), so a retry whose TTL ended
// stays in its retry queue until the group queue takes it. An existing
// retry queue is used as it is (one without at-least-once with a warning,
// until it expires unused); the dead-letter queue keeps
// the adapter-wide queue options (classic by default), as Node declares it.
//
// # Wire format
//
// As @moleculer/channels 0.1.8: channel P.n is a fanout exchange P.n; group g
// consumes the durable queue g.P.n bound to it; the payload is the body as
// serialized, headers are AMQP table entries (strings; x-redelivered-count
// an integer). Every send carries a message id (Message.ID of the handlers;
// a retry keeps it) and a timestamp, and at least one header (0.1.8 fails to
// retry a message without a headers table, so a send with none carries
// x-redelivered-count 0).
//
// # Deliveries, retries, dead letters
//
// Each subscription consumes on an AMQP channel of its own with prefetch =
// MaxInFlight and hands every delivery to the kit (kit.Consumer.Run),
// which decides; the adapter carries the outcome out:
//
//   - Ack: basic.ack, queued: the acks settled meanwhile go out as one
//     basic.ack with multiple=true for the run of settled delivery tags
//     from the lowest outstanding one (those beyond a message still
//     running wait for it). Acks wait to join one only while at most a
//     quarter of MaxInFlight of them wait, while the prefetch credit is
//     not full, and for at most AckHoldTime (5 ms); the ack after a
//     confirmed copy (retry, keep, dead letter, hand-back, recount) goes
//     out with the next flush. A quorum queue thus gets far fewer settle
//     commands (Raft entries): about 2,100 frames for 30,000 messages in
//     `make bench`'s concurrent test at MaxInFlight 100, against 14,100.
//     Acks still held when the channel or connection dies are lost with
//     it: RabbitMQ delivers those messages again (at most a quarter of
//     MaxInFlight that finished in the last 5 ms: at-least-once).
//   - Retry: a copy of the message (properties kept, except the expiration
//     and user id) with x-redelivered-count + 1, x-group and the failure's
//     x-error-* headers is published, confirmed, to the retry queue
//     "<g.P.n>.retry.<ms>ms", then the original is acked. The retry queue
//     has x-message-ttl = the delay and dead-letters expired messages to the
//     default exchange with routing key g.P.n: RabbitMQ puts the copy back
//     in the group queue when its backoff ends. Nothing waits in the
//     consuming process, so other messages are not blocked and a pending
//     retry survives a restart of that process (and of RabbitMQ: the retry queue
//     is durable and the copy persistent when the message was). Each queue
//     holds one delay, so the first message to expire is always at its head
//     (a per-message TTL in a shared queue would wait behind longer ones);
//     delays are rounded up to two significant digits of milliseconds to
//     bound the number of queues, which expire when unused
//     (x-expires, renewed by the sends). The delayed-message plugin is not
//     required. A crash between the confirmed copy and the ack delivers the
//     message twice (at-least-once).
//   - DeadLetter: a copy with the kit's headers (the original ones kept,
//     x-original-*, x-redelivered-count, x-error-*) is published, mandatory
//     and confirmed, to the fanout exchange named like the dead-letter queue
//     Q, then the original is acked. At subscribe time the adapter declares
//     what 0.1.8 declares — the fanout dead-letter exchange
//     (DeadLettering.ExchangeName, DEAD_LETTER by default) bound to queue Q —
//     plus the fanout exchange Q bound to queue Q. Publishing to exchange Q
//     rather than to the shared DEAD_LETTER exchange reaches queue Q and
//     every group consuming Q as a channel (Go or Node), and only them: a
//     fanout DEAD_LETTER shared by several channels copies each dead letter
//     into every queue bound to it.
//   - Keep (the dead-letter publish failed): a copy marked x-channels-final
//     with the failure goes to the retry queue of DefaultKeepDelay,
//     confirmed, then the original is acked; the copy is dead-lettered again
//     without running.
//   - Release (a run cut by the deadline of a stop): a copy with the count
//     so far goes to the tail of the group queue, then the original is
//     acked (see below); x-redelivered-count is unchanged, so no attempt
//     is used up, and no delivery either.
//
// When a retry copy or a dead letter cannot be published, the message is
// handed back after DefaultSettleFailureDelay by a copy with the count so
// far (as Release), which uses up no delivery: a requeue would raise a
// quorum queue's x-delivery-count for a failure of ours. While publishing
// is unavailable (the publishing connection down, blocked by a resource
// alarm or frozen, the copy's channel closed before its confirm, the copy
// timed out) the message stays unacknowledged on its consumer and the
// hand-back is tried again every DefaultSettleFailureDelay; a drain hands
// back the waiting ones once the connection is up, within its deadline
// (after it, closing the channel requeues them, and that delivery counts).
// A copy the broker refused (nack, return) is requeued (nack). A retry
// (or kept) copy written while a resource alarm blocks the publishing
// connection is held unread by RabbitMQ until the alarm ends, and then
// confirmed: its confirm is kept with the message, which stays
// unacknowledged; once publishing is unblocked the adapter waits up to
// kit.DefaultSettleTimeout more for it and acks the original when it
// comes (no second copy, the attempt does not run again); only a copy
// refused, or its channel closed, or no confirm by then, leads to the
// hand-back above. A drain acks the original when the confirm comes within
// its deadline, else leaves it to the channel's close.
//
// # Attempts and deliveries
//
// The attempt is 1 + x-redelivered-count (failed runs; a dead-letter copy
// consumed as a channel of its own starts at 1). A run cut by a crash, a
// lost channel or the deadline of the plugin's Stop changes no header, so it comes back as
// the same attempt and is never dead-lettered for it.
//
// Deliveries (RetryPolicy.MaxDeliveries, the bound on poison pills) are
// failed runs + unfinished deliveries + 1. Quorum queues count the
// unfinished ones (x-delivery-count). Classic queues only set the
// redelivered flag, and a requeue cannot change a message, so the adapter
// counts itself: a classic-queue delivery that arrives redelivered is not
// run; a copy with x-channels-unfinished + 1 is published (confirmed) to the
// tail of the group queue and the original acked, and the copy runs. This
// costs one publish per redelivery (none on the normal path) and moves a
// redelivered message to the tail of its queue. When RabbitMQ (or the
// frame_max check) refuses that copy for a lasting reason (headers that
// leave no room for the count, a full queue with x-overflow
// reject-publish, an unroutable copy), the delivery runs with the count
// kept in memory only; other failures hand it back later. On a quorum
// queue RabbitMQ also enforces the bound itself (x-delivery-limit, see
// Queue types).
//
// Only what this adapter or RabbitMQ wrote is trusted: x-delivery-count
// counts only on a redelivery from a queue known to be a quorum queue (on a
// first delivery it is a producer's header; on a classic queue RabbitMQ
// may leave a producer's value in place), x-channels-unfinished only on a copy this group
// made (x-group or x-channels-group is the group), x-channels-final only
// on a copy this group kept (x-group); every count is clamped to
// [0, 65536].
//
// A run cut by the deadline of a stop is handed back as a copy carrying
// the count so far (x-channels-unfinished, x-channels-group), published to
// the tail of the group queue while the consumer channel is still open
// (the drain waits for it up to kit.FinishBy, 66 ms past its deadline,
// less the 15 ms kept to close the channel; a hand-back that starts later
// gets no more time), then acked: it uses no delivery. When the copy cannot be
// published in time the message is requeued by RabbitMQ, and that
// delivery counts; when the copy was written and its confirm did not come,
// the original is left to the channel's close (no nack). Messages delivered to
// a stopping consumer and never run are requeued (nack): they count as a
// delivery, within the margin of MaxDeliveries.
//
// RabbitMQ's consumer_timeout (30 minutes by default) closes the consumer
// channel of a delivery left unacknowledged longer, and redelivers every
// message unacknowledged on it (the long one counts as unfinished). The
// adapter logs it as an error naming the channel and group; raise
// consumer_timeout (rabbitmq.conf, or x-consumer-timeout on the queue from
// RabbitMQ 3.12) above the longest handler.
//
// Handlers get Message.ID = the message id property (else the correlation
// id, else consumer tag:delivery tag), Message.Raw = the *amqp091.Delivery,
// and the headers as strings (RabbitMQ's x-death family and this adapter's
// bookkeeping headers left out). The adapter is a broker.LagReporter: Lag
// is the number of messages ready in the group queue, Pending the messages
// this adapter's consumers of the group hold unsettled (AMQP does not tell
// other connections' unacknowledged messages).
//
// # Publisher confirms
//
// Publish returns once RabbitMQ confirmed the message, or a
// *broker.PublishError: nack, a returned mandatory message, a closed
// channel or connection (the message may then have been taken), ctx ending.
// Sends share a pool of confirm-mode channels, each waiting only for its
// own confirm; a send that could close its channel (a mandatory one, the
// first to an exchange not known to exist) has a channel to itself, so a
// 404 for a missing exchange fails no other send. An exchange deleted
// after it was declared closes the shared channel of the next send to it:
// that send fails with the 404, the exchange is declared again by the next
// one (the cache of declared exchanges is cleared on a 404 and on every
// reconnection), and the other sends on that channel are reported
// confirmed when they were written before the failing one (RabbitMQ
// handles a channel's publishes in order), or sent again on a channel of
// their own (at-least-once: possibly twice).
//
// Header budget: RabbitMQ closes the whole connection (FRAME_ERROR) on a
// content header larger than frame_max (128 KiB by default). The adapter
// is a broker.Limiter: Limits().MaxHeaderBytes is the negotiated frame_max
// less the content header's other fields at their largest and a reserve
// for the adapter's own headers (127,712 bytes with 128 KiB). The plugin
// refuses sends over it (a *broker.PublishError wrapping
// broker.ErrTooLarge); the x-error-* headers of retry copies and dead
// letters are fitted into it; and every publish of the adapter (sends,
// retries, dead letters, hand-backs) is checked against the frame size
// before it is written.
//
// # Connections and recovery
//
// Sends (and the copies settling publishes: retries, dead letters,
// hand-backs) and declarations use one connection; consumers use another,
// dialed at the first Subscribe. A message that closes the consuming
// connection leaves sends alone; a memory or disk alarm (RabbitMQ blocks
// the publishing connection: connection.blocked) leaves acks alone: sends
// wait for connection.unblocked, bounded by their context, and fail with
// the alarm's reason. (NewFromClient uses the given connection for
// both.) Connection() and ConsumerConnection() return them.
//
// A lost connection is dialed again (the failover list in turn, with the
// reconnect backoff) until Close; sends fail while it is down. A consumer
// whose channel closed, or that RabbitMQ cancelled (its queue was deleted),
// opens a new channel, declares its topology again and resumes; a closed
// publishing channel is replaced on the next send. Close returns by its
// context even while a connection is being dialed; a connection whose dial
// ends after Close is closed at once, and no consumer opens after it.
//
// # Replication and clusters
//
// Against a RabbitMQ cluster, give New the nodes as a ';'-separated
// failover list ("amqp://a:5672/;amqp://b:5672/;amqp://c:5672/"): every
// connection attempt takes the next node of the list, so a connection lost
// with its node is dialed again on another one, and the consumers
// resubscribe there (declaring their topology again; a quorum queue is
// served by whichever node the client is connected to). Sends fail while
// no connection is up.
//
// Group queues are quorum queues by default: Raft-replicated, one member
// per cluster node (RabbitMQ's default initial group size; set
// x-quorum-initial-group-size in ChannelOptions.Queue.Arguments for
// fewer). A publisher confirm from a quorum queue comes once a majority of
// its members has written the message to disk, so a send that returned nil
// survives the loss of any minority of the nodes; the cost is a Raft round
// trip and an fsync on a majority in each send's latency. While the queue
// has no leader (the leader's node was lost, an election is under way, or
// the node the client is connected to is cut off from the majority), sends
// are not confirmed: they fail (nack, or their context ends), and are never
// reported sent. Classic queues (QueueClassic) are not replicated: a send
// survives a restart of the queue's node (persistent messages), not its
// loss. A publishing channel RabbitMQ nacked a message on is replaced (and
// closed DefaultOpTimeout later): RabbitMQ 3.10 can go on nacking every
// publish of a channel that first sent to a quorum queue during its leader
// election, while a new channel is served.
//
// With cluster_partition_handling = pause_minority, a node cut off from the
// majority stops serving: its clients are disconnected and reconnect to
// another node of their list.
//
// # Drain and frozen links
//
// Stop cancels the consumer at once (basic.cancel, given half of the
// drain's time), hands back every message delivered to it but not run
// (nack, requeue), waits for the running handlers (bounded by its
// context), then closes the consumer channel: what a handler cut by the
// deadline left unacked is requeued by RabbitMQ as the same attempt. The
// queued acks are written before the channel.close (a close racing them
// would requeue handled messages), and the close gets until kit.FinishBy;
// a drain whose context had already ended still gives the acks 40 ms and
// the close 15 ms more.
//
// Every wait of a send, a drain and Close is bounded by its context, also
// on a frozen link (no byte moves, the connection stays open): opening and
// closing AMQP channels, basic.cancel, writing a publish (a large message
// blocks on a full socket), the connection's close handshake (given 40 ms
// past the deadline). A driver call that does not return is left to end in
// the background (when the heartbeat gives up on the connection) and
// reported as a *broker.AbandonedError.
//
// # Dead letters and removal
//
// Dead letters stay in the dead-letter queue Q (DeadLettering.QueueName)
// until someone reads them: that queue is where operators and tools look
// (basic.get, the management UI, Purge). A channel named Q consumed by a
// group g reads its own queue g.Q, bound to the exchange Q: it gets the
// dead letters published after g.Q was first declared, not the ones
// before (as with @moleculer/channels).
//
// The adapter is a broker.ChannelRemover: RemoveChannel deletes the queues
// of the groups it subscribed to the channel since New (with the retry
// queues it declared for them), the queue named like the channel and the
// channel's exchange; its own consumers of a removed group stop. It then
// deletes, with exchange.delete if-unused, the shared dead-letter exchange
// (DEAD_LETTER) that its subscriptions to the channel, or with the
// channel as their dead-letter queue, declared: RabbitMQ refuses while any
// queue is bound to it (another dead-letter queue, of this process or of
// a Node service), so it stays while one is and goes with the removal of
// the last one this adapter knows of. No binding ties it to the group
// queues of @moleculer/channels 0.1.8 that name it as their
// x-dead-letter-exchange: RabbitMQ drops their dead letters once no queue
// is bound to it, whether it exists or not, and they declare it again when
// they subscribe. AMQP
// cannot list the queues bound to an exchange: RemoveGroup deletes the
// queue of a group this adapter never subscribed. Purge empties a group
// queue or a dead-letter queue.
//
// # Operations tooling
//
// The adapter is a broker.DeadLetterStore, a broker.Tailer and a
// broker.ChannelLister (package dlq and the channels command use them); it
// is not a broker.MessageRemover: RabbitMQ stores a channel's messages in
// its groups' queues, and AMQP 0-9-1 cannot delete one message of a queue
// without taking the ones before it.
//
// BrowseDeadLetters reads the dead-letter queue Q with basic.get
// (unacknowledged, on a connection of its own) up to the number of
// messages Q held when it started, then closes its channel: RabbitMQ puts
// every message back in its place (a classic queue's order and count are
// unchanged and no delivery is counted). While a browse runs, the messages
// it took are not ready for other readers of Q itself (another browse sees
// fewer); the groups that consume Q as a channel read queues of their own
// and are not affected. A quorum Q is refused (broker.ErrUnsupported)
// before any message is taken: each basic.get counts a delivery there, and
// RabbitMQ drops or dead-letters a message at its delivery limit
// (x-delivery-limit, a policy, or 20 by default from RabbitMQ 4.0); the
// adapter declares Q as a classic queue unless told otherwise. The type is
// found by declaring Q again as a quorum queue, which a classic queue
// refuses and a quorum queue takes (also with RabbitMQ's relaxed checks on
// redeclaration, which ignore x-queue-type); a Q whose type cannot be told
// is refused too. The ID of
// a dead letter is its message id (dead letters keep the id of the message
// they copy), else its x-original-id header, followed by "~" and 8 hex
// digits of a digest of its payload, headers and properties (the dead
// letters of one message written by two groups differ in their headers,
// so in their IDs), else "sha256:" and 24 hex digits of that digest; Time
// is zero (RabbitMQ does not tell when it stored a message:
// x-error-timestamp tells when it was dead-lettered). RemoveDeadLetters
// takes the messages the same way, recomputes the ID of each, acknowledges
// those with the given IDs (copies with the same content share one) and
// gives the others back in their places; it counts a removal only once
// RabbitMQ answered the channel.close that follows the acknowledgements
// (close-ok comes after RabbitMQ processed them), and without that answer
// it returns 0 and an error (the messages may or may not be removed). Headers are read as the
// consumers read them; a message whose header table the client library
// refuses ends the browse with an error at its position (it closes only
// the browse's connection), and Purge or the management UI removes it. An
// adapter built with NewFromClient cannot dial a connection of its own,
// and such a message would close the given one for good: there,
// BrowseDeadLetters, RemoveDeadLetters and Tail return an error wrapping
// broker.ErrUnsupported (Channels, which asks the management API, works).
//
// Taking a message shows (browse and removal alike): RabbitMQ marks
// every message a browse gave back as redelivered (a group reading the
// dead-letter queue as a channel gets it with the redelivered flag; a
// classic queue counts no delivery);
// a message whose TTL (x-message-ttl, expiration) ran out while a browse
// held it is dropped, or dead-lettered, when it goes back; and RabbitMQ's
// consumer_timeout (30 minutes by default) applies to the messages a
// browse holds: a browse longer than that (a slow fn) has its channel
// closed by RabbitMQ and ends with an error, every message given back.
//
// Tail declares an exclusive, auto-deleted queue named by RabbitMQ, bound
// to the channel's exchange with the adapter-wide BindingKey ("#" for a
// topic exchange without one), and consumes it (at most TailPrefetch
// messages unacknowledged) until its context ends; the queue goes with it.
//
// Channels asks the RabbitMQ management HTTP API (AMQP 0-9-1 cannot list
// exchanges or queues): GET /api/exchanges, /api/queues (by pages of 500)
// and /api/bindings of the connection's virtual host, each answer bounded
// by MaxManagementResponse (an error answer's body is not read). Every
// exchange but the default one and the amq.* ones is a channel, with
// Messages -1; its groups are the queues named "<group>.<channel>" bound
// to it, with Lag = messages_ready and Pending = messages_unacknowledged
// (counts the API refreshes every 5 s by default; -1 when it has none:
// not collected yet, or management_agent.disable_metrics_collector). A
// dead-letter queue is listed through the fanout exchange named like it,
// with Messages = its messages_ready. The API is taken to be at
// http://<host>:15672 of the AMQP URL (https://<host>:15671 for amqps://,
// each URL of a failover list in turn; for a connection given to
// NewFromClient, its peer, by the TLS server name when it has one, with
// its TLS configuration) with the AMQP user and password, asked directly
// (no HTTP_PROXY: a proxy would see the credentials; a redirect is an
// error, not followed); WithManagementURL sets another address (a node
// whose management listener is not on 15672; a path prefix, no query) or
// other credentials. A certificate the API's TLS does not verify is an
// error that says so. An API that
// does not answer or refuses the request (401, 403, 404) is an error
// wrapping broker.ErrUnsupported that says to enable the
// rabbitmq_management plugin or set WithManagementURL; no error shows a
// password.
package amqp
