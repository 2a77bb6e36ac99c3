package broker

import (
	"context"
	"time"
)

// The optional abilities below serve operations tooling (package dlq and the
// channels command): they read and remove what a broker holds without joining
// any group's work. The plugin never calls them. Names are full (namespace
// applied). An adapter without an ability is refused by the tooling with
// ErrUnsupported.

// StoredMessage is a message as the broker holds it.
type StoredMessage struct {
	// ID identifies the message within its channel for removal: a stream
	// entry ID (Redis), a stream sequence (JetStream), "partition/offset"
	// (Kafka), a delivery position (memory), the message's id (RabbitMQ).
	ID string
	// Channel is the full name of the channel (or dead-letter queue) that
	// holds it.
	Channel string
	Payload []byte
	Headers map[string]string
	// Key is the message's key where the broker stores one with it (Kafka's
	// record key: it chose the partition, and a compacted topic needs it);
	// nil when it has none or the broker keeps no key.
	Key []byte
	// Time is when the broker stored it; zero when the broker does not tell.
	Time time.Time
	// DecodeError says why the headers (or the entry) could not be decoded
	// as a consumer decodes them (Headers is then nil); empty when they
	// were.
	DecodeError string
}

// DeadLetterStore reads and removes the dead letters held in a dead-letter
// queue, those written before the reader started included.
type DeadLetterStore interface {
	// BrowseDeadLetters calls fn with each message held in queue, oldest
	// first, up to the newest present when the call started, until fn
	// returns false. It consumes, acknowledges and reorders nothing a group
	// or another browser sees. A queue that does not exist holds nothing.
	BrowseDeadLetters(ctx context.Context, queue string, fn func(*StoredMessage) bool) error
	// RemoveDeadLetters removes the messages with these IDs from queue and
	// returns how many it removed; an ID not found is not an error.
	RemoveDeadLetters(ctx context.Context, queue string, ids ...string) (int, error)
}

// MessageRemover deletes one stored message of a channel where the broker
// can (Redis XDEL, JetStream message delete).
type MessageRemover interface {
	// RemoveMessage deletes the message id from channel; ErrNotFound when
	// the channel holds no such message.
	RemoveMessage(ctx context.Context, channel, id string) error
}

// Tailer follows a channel without joining any group.
type Tailer interface {
	// Tail calls fn with each message sent to channel after Tail started,
	// until ctx ends (then it returns nil) or fn returns false.
	Tail(ctx context.Context, channel string, fn func(*StoredMessage) bool) error
}

// ChannelLister lists channels with their groups' backlogs.
type ChannelLister interface {
	// Channels lists the channels whose full name starts with prefix ("" for
	// all), sorted by name.
	Channels(ctx context.Context, prefix string) ([]ChannelInfo, error)
}

// ChannelInfo describes one channel as the broker holds it.
type ChannelInfo struct {
	Name string
	// Messages counts the messages the channel stores; -1 when the broker
	// does not store messages per channel (RabbitMQ stores them per group).
	Messages int64
	Groups   []GroupInfo
}

// GroupInfo is one consumer group of a channel and its backlog.
type GroupInfo struct {
	Name string
	GroupLag
}
