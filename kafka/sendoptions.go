package kafka

import (
	"fmt"
	"time"

	"github.com/microchannels/channels/kit"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"

	"github.com/microchannels/channels/broker"
)

// Acks is how many replicas must have a message before a send returns.
type Acks int

const (
	acksUnset Acks = iota
	// AcksAll waits for every in-sync replica (the default).
	AcksAll
	// AcksLeader waits for the partition leader only.
	AcksLeader
	// AcksNone does not wait: the send returns once written on the socket,
	// and a lost message is not reported.
	AcksNone
)

func (a Acks) native() kafkago.RequiredAcks {
	switch a {
	case AcksLeader:
		return kafkago.RequireOne
	case AcksNone:
		return kafkago.RequireNone
	}
	return kafkago.RequireAll
}

// Compression of a produce request.
type Compression int

const (
	compressionUnset Compression = iota
	// NoCompression (the default).
	NoCompression
	Gzip
	Snappy
	Lz4
	Zstd
)

func (c Compression) native() compress.Compression {
	switch c {
	case Gzip:
		return compress.Gzip
	case Snappy:
		return compress.Snappy
	case Lz4:
		return compress.Lz4
	case Zstd:
		return compress.Zstd
	}
	return compress.None
}

// SendOptions are the Kafka-only options of one send, passed with
// broker.WithAdapterOptions or the With* send options of this package.
// Several values are merged, later fields winning.
type SendOptions struct {
	// Key is the message key: messages with the same key go to the same
	// partition (murmur2, as the Java client and kafkajs's default
	// partitioner), and PerKey ordering runs them one at a time.
	Key []byte
	// Partition, when not nil, is the partition the message goes to.
	Partition *int
	// Acks overrides the adapter's acknowledgement level for this send.
	Acks Acks
	// Timeout bounds the send (on top of the caller's context).
	Timeout time.Duration
	// Compression of this send (default none).
	Compression Compression
}

// WithKey sends with a message key.
func WithKey(key string) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Key: []byte(key)})
}

// WithPartition sends to one partition.
func WithPartition(p int) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Partition: &p})
}

// WithAcks sets the acknowledgement level of one send.
func WithAcks(a Acks) broker.PublishOption { return broker.WithAdapterOptions(SendOptions{Acks: a}) }

// WithCompression compresses one send.
func WithCompression(c Compression) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Compression: c})
}

// WithTimeout bounds one send.
func WithTimeout(d time.Duration) broker.PublishOption {
	return broker.WithAdapterOptions(SendOptions{Timeout: d})
}

var isSendOption = kit.IsOf[SendOptions]

func sendOptions(opts []any) (SendOptions, bool) {
	return kit.MergedOption(opts, kit.Overlay[SendOptions])
}

func (o SendOptions) validate() error {
	switch {
	case o.Partition != nil && *o.Partition < 0:
		return fmt.Errorf("%w: kafka Partition must be >= 0", broker.ErrInvalidOption)
	case o.Acks < acksUnset || o.Acks > AcksNone:
		return fmt.Errorf("%w: kafka Acks %d is unknown", broker.ErrInvalidOption, o.Acks)
	case o.Compression < compressionUnset || o.Compression > Zstd:
		return fmt.Errorf("%w: kafka Compression %d is unknown", broker.ErrInvalidOption, o.Compression)
	case o.Timeout < 0:
		return fmt.Errorf("%w: kafka send Timeout must be >= 0", broker.ErrInvalidOption)
	}
	return nil
}
