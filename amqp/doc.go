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
//	a, err := amqp.New("amqp://user:secret@rabbit-1:5672/;amqp://user:secret@rabbit-2:5672/",
//		amqp.WithChannelOptions(amqp.ChannelOptions{Queue: amqp.QueueOptions{
//			Arguments: amqp091.Table{"x-queue-type": "quorum"}}}),
//		amqp.WithTLS(tlsConfig))
//
// A ';'-separated list is a failover list: each connection attempt takes the
// next URL. amqp.NewFromConnection(conn) uses a connection you dialed; you
// keep its lifetime (Close leaves it open, and a lost connection is not
// dialed again). Credentials never appear in errors or logs.
//
// # Options
//
// Adapter options: WithChannelOptions (queue, exchange and consumer
// options for every channel), WithTLS, WithConfig (amqp091.Config: vhost,
// heartbeat, SASL...), WithPublisherChannels, WithPublishAssertExchange,
// WithReconnectBackoff. A channel overrides the queue, exchange and consumer
// options field by field with a ChannelOptions value in its AdapterOptions;
// a value of another type is an error (broker.ErrInvalidOption).
//
//	option                              default                         meaning
//	ChannelOptions.Queue                durable, no arguments           group queue declaration (as Node declares it)
//	ChannelOptions.Exchange             DefaultExchangeType "fanout",   channel exchange declaration
//	                                    durable
//	ChannelOptions.Consumer             not exclusive, no arguments     basic.consume arguments (x-priority, ...)
//	ChannelOptions.BindingKey           ""                              binding of the group queue to the exchange
//	ChannelOptions.DeadLetterQueue      the adapter-wide Queue options  dead-letter queue declaration
//	prefetch                            the channel's MaxInFlight       basic.qos of the consumer's own channel
//	WithPublisherChannels               DefaultPublisherChannels (4)    confirm-mode channels the sends share
//	WithPublishAssertExchange           true                            declare a channel's exchange before its first send
//	WithReconnectBackoff                100 ms doubling to 5 s          pace of reconnections and consumer resumptions
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
// *ReturnedError) instead of a silent drop.
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
// MaxInFlight and hands every delivery to the kit (broker.Consumer.Run),
// which decides; the adapter carries the outcome out:
//
//   - Ack: basic.ack, queued: the acks settled meanwhile go out as one
//     basic.ack with multiple=true for the run of settled delivery tags
//     from the lowest outstanding one, and one by one beyond a message
//     still running (so a slow message holds back no prefetch credit).
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
//   - Release: basic.nack with requeue; x-redelivered-count is unchanged,
//     so no attempt is used up.
//
// When a retry copy or a dead letter cannot be published, the message is
// handed back (nack, requeue) after DefaultSettleFailureDelay.
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
// redelivered message to the tail of its queue. Releases (messages handed
// back unrun at a stop) are counted too, on both queue types: the default
// margin of MaxDeliveries (MaxRetries + 1 + 5) absorbs a few.
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
// 404 for a missing exchange fails no other send.
//
// # Recovery
//
// A lost connection is dialed again (the failover list in turn, with the
// reconnect backoff) until Close; sends fail while it is down. A consumer
// whose channel closed, or that RabbitMQ cancelled (its queue was deleted),
// opens a new channel, declares its topology again and resumes; a closed
// publishing channel is replaced on the next send.
//
// # Drain
//
// Stop cancels the consumer at once (basic.cancel), hands back every
// message delivered to it but not run (nack, requeue), waits for the
// running handlers (bounded by its context), then closes the consumer
// channel: what a handler cut by the deadline left unacked is requeued by
// RabbitMQ as the same attempt.
package amqp
