package broker

import "time"

// Message is one delivery handed to a channel handler.
type Message struct {
	// Channel is the full (prefixed) channel name.
	Channel string
	// Group is the consumer group that received it.
	Group string
	// ID is the broker's id: a Redis stream id, a JetStream sequence,
	// "partition:offset" on Kafka, a delivery tag or message id on AMQP.
	ID string
	// Payload holds the bytes as published.
	Payload []byte
	// Headers holds user and context headers. Handlers may read it freely;
	// changes are not sent anywhere.
	Headers map[string]string
	// Attempt is the delivery attempt, 1 on the first delivery.
	Attempt int
	// Timestamp is when the broker stored the message, when it says so.
	Timestamp time.Time
	// Raw is the adapter's native message (redis.XMessage, amqp091.Delivery,
	// jetstream.Msg, kafka.Message, ...).
	Raw any

	serializer Serializer
}

// NewMessage builds a message bound to a serializer for Decode.
func NewMessage(ser Serializer) *Message { return &Message{serializer: ser} }

// Serializer returns the serializer bound for Decode (nil: none yet).
func (m *Message) Serializer() Serializer { return m.serializer }

// SetSerializer binds the serializer used by Decode.
func (m *Message) SetSerializer(s Serializer) { m.serializer = s }

// Decode unmarshals the payload into v with the channel's serializer. A
// failure is a *DecodeError, which makes the message poison when returned by
// the handler.
func (m *Message) Decode(v any) error {
	s := m.serializer
	if s == nil {
		s = JSON{}
	}
	if err := s.Unmarshal(m.Payload, v); err != nil {
		return &DecodeError{Channel: m.Channel, MsgID: m.ID, Field: "payload", Err: err}
	}
	return nil
}

// Header returns one header value.
func (m *Message) Header(name string) string { return m.Headers[name] }

// Key returns the message key given to the send with WithKey ("" for
// none): the HeaderKey header.
func (m *Message) Key() string { return m.Headers[HeaderKey] }
