package kafka

import (
	"testing"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/kafka"
)

// TestPortableStartPositions: a group created after messages were sent on
// its topic starts at the end of every partition, their beginning, or the
// first offset stored at or after the time (ListOffsets by timestamp), as
// its Channel.Start says.
func TestPortableStartPositions(t *testing.T) {
	needKafka(t)
	channelstest.StartPositions(t, func() (broker.Adapter, error) {
		return kafka.New(kafkaURL(), kafka.WithChannelOptions(timings))
	})
}
