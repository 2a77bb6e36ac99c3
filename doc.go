// Package channels gives go-micro v4 services reliable, broker-backed
// message channels: the Go counterpart of @moleculer/channels, wire
// compatible with it.
//
// A service declares channel handlers in its schema struct; a Plugin
// subscribes them through an adapter (package redis for Redis Streams,
// amqp for RabbitMQ, jetstream for NATS JetStream, kafka for Apache Kafka,
// memory for the in-process bus; any broker.Adapter) with consumer groups,
// a real MaxInFlight bound, retries with backoff, dead-lettering,
// interceptors and a stop that drains in-flight work. An adapter's package
// registers its URL schemes when imported:
//
//	import _ "github.com/microchannels/channels/memory"
//
//	p, err := channels.New(channels.WithAdapter("memory://"))
//	svc := micro.NewService(micro.Name("payments"), p.Install(&Payments{
//		Channels: channels.Channels{
//			"order.created": channels.On(func(ctx context.Context, m *channels.Message) error {
//				var o Order
//				return m.Decode(&o)
//			}),
//		},
//	}))
//	svc.Run()
//
// Sending: Plugin.SendToChannel (or the SendFunc injected into the schema)
// sends one message and returns once the broker accepted it;
// Plugin.SendBatch sends many to one channel together (pipelined or
// batched by the adapter) and returns nil or a *BatchError holding every
// message's outcome:
//
//	err := p.SendBatch(ctx, "order.created", channels.BatchOf(orders...))
//	var be *channels.BatchError
//	if errors.As(err, &be) {
//		retry := be.Failed() // the indexes of the messages not sent
//	}
//
// Semantics shared by every adapter:
//   - each group receives every message once; members of a group share the
//     load; groups are durable;
//   - MaxInFlight bounds running handlers per channel and node; 1 gives FIFO;
//   - MaxRetries N means up to N redeliveries after the first attempt, with
//     backoff, and NoRetries none (in a Channel, where 0 takes the plugin
//     default, and in WithMaxRetries); Message.Attempt is 1 on the first
//     delivery;
//   - after the last failed attempt the message goes to the dead-letter
//     queue with x-original-* and x-error-* headers, and the original is
//     acknowledged only once that publish is confirmed; without
//     dead-lettering it is dropped with an error log;
//   - a message whose headers or payload cannot be decoded (a *DecodeError,
//     for example from Message.Decode) and an error marked with Permanent
//     skip the retries;
//   - Stop drains: no new fetches, running handlers finish (bounded by the
//     context), nothing unacknowledged is lost.
//
// Only this package imports go-micro; the broker, hooks and adapter
// packages are framework-free.
package channels
