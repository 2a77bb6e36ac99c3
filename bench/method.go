package main

// methodText ends docs/bench.md.
const methodText = `
## Method

Each adapter is measured with four implementations, in the same run, on the same broker: the
**channels** library, the **raw** driver used directly at its best (the ceiling), **Watermill**
with its pub/sub for that broker, and the Node **@moleculer/channels** (moleculer-channels),
run by ` + "`bench/node/bench.js`" + ` with the packages of the interop peer (` + "`e2e/interop`" + `).
Every run has a new channel and consumer group ("bench"), deleted afterwards; before the clock
starts, warm-up messages are sent until one has been handled (the consumer is subscribed,
both sides connected). The Go sides use one connection (or plugin) for sending and another one for
consuming, as two services would; the Node side is one ServiceBroker doing both.
The order of the four columns rotates from one repetition to the next.

- **latency**: a ping-pong with exactly one message in flight: the handler of message *i*
  sends message *i+1* (it returns, and acks, after that send returned). Measured for a fixed
  time after the warm-up round trips: round trips per second, and the one-way time from the
  start of a send to the start of its handler (p50, p99). Consumers run with MaxInFlight 1.
- **sequential**: N messages, each send awaited before the next, to a channel consumed with
  MaxInFlight 10 or 100; the time from the first send to the last handler.
- **concurrent**: the same N messages sent by many goroutines (Node: as many concurrent
  async loops).
- **batch**: the same N messages sent in batches with each implementation's batch API
  (` + "`Plugin.SendBatch`" + `, a Redis pipeline, AMQP or JetStream publishes whose confirms or acks are
  awaited together, one kafka-go write, Watermill's Publish of many messages), one batch awaited
  before the next; @moleculer/channels 0.1.8 has no batch send (n/a).

A send returns once the broker accepted the message, as strongly as each side can tell:
Redis XADD replies, RabbitMQ publisher confirms of persistent messages, JetStream publish acks,
Kafka acks from all in-sync replicas. @moleculer/channels 0.1.8 publishes to RabbitMQ without
confirms (its messages are persistent here), and rejects a send with "Write buffer is full" when
amqplib asks the caller to wait for the channel's drain event (amqplib took the message): the
Node script then waits for the drain and goes on, as a caller of 0.1.8 must. Handlers do nothing
but record the message; a redelivered ping of the latency test is ignored.

| adapter | raw ceiling | Watermill | channels, moleculer-channels |
|---|---|---|---|
| memory | a buffered Go channel read by MaxInFlight goroutines | gochannel, MaxInFlight workers on one subscription | the memory bus; @moleculer/channels' Fake adapter (moleculer local events) |
| redis, redis-cluster | go-redis: XADD (concurrent sends through the autopipeliner, a batch in one pipeline); the consumer sends the XACK of the finished messages in the same pipeline as its next XREADGROUP (COUNT = free handlers) | watermill-redisstream, one subscription (consumer of the group) per handler | the adapter with WithAutoPipeline for the concurrent test, defaults otherwise; every Go client speaks RESP2 (the adapter's default) |
| amqp | amqp091-go: publisher confirms awaited per send (4 confirm channels shared by concurrent senders, the adapter's pool size; a batch's confirms awaited together); prefetch = MaxInFlight, MaxInFlight handlers each acking | watermill-amqp durable pub/sub with ConfirmDelivery (a channel per concurrent sender), one subscription (prefetch 1) per handler | fanout exchange, durable group queue "bench.<channel>" |
| nats | nats.go jetstream: PublishAsync, the ack awaited per send (per batch for the batch test); a durable pull consumer read with Consume (MaxInFlight buffered) by MaxInFlight handlers, each acking | watermill-nats with JetStream (pkg/nats), durable queue subscription, SubscribersCount = MaxInFlight | a stream per channel, durable consumer "bench" |
| kafka | kafka-go: Writer (round-robin over the partitions; batch size 1 for sequential sends, the number of senders for concurrent ones, a partition's share of the batch for the batch test; 1 ms batch timeout), a group Reader feeding MaxInFlight handlers, offsets committed in order behind them (CommitInterval 100 ms) | watermill-kafka (Sarama), sync publisher; one subscription, one message at a time per partition | topics of 10 partitions for sequential, concurrent and batch, of 1 for latency (created up front; the library's adapter creates them with TopicOptions.Partitions), unkeyed sends, group "bench:<channel>" |

The cluster profiles (` + "`make bench-cluster`" + `, 3 nodes each, channels and raw only) are the same
harnesses with replication on both sides: redis-cluster-ha (3 primaries with a replica each),
nats-cluster (streams of 3 replicas), rabbitmq-cluster (quorum queues, the library given the 3
URLs, the raw loop the first that answers), kafka-cluster (replication factor 3,
min.insync.replicas 2, acks=all).

Watermill hands a subscription its next message only after the previous one is acked (except
gochannel and the NATS subscriber with SubscribersCount), so MaxInFlight n is n subscriptions of
the consumer group where the broker shares a group's messages between them.

The brokers, the producers and the consumers share the machine's cores: figures move by tens of
percent between runs, more when anything else runs; compare columns within one run.
`
