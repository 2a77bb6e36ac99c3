package nats

import (
	"testing"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/jetstream"
)

// TestPortableStartPositions: a group created after messages were stored
// in its stream starts at the newest (DeliverNew), the oldest (DeliverAll)
// or the time (DeliverByStartTime) its Channel.Start says.
func TestPortableStartPositions(t *testing.T) {
	needNATS(t)
	channelstest.StartPositions(t, func() (broker.Adapter, error) {
		return jetstream.New(natsURL(), jetstream.WithChannelOptions(timings))
	})
}

// TestPortableKey: a keyed message keeps its key (one stream per channel
// keeps the send order).
func TestPortableKey(t *testing.T) {
	needNATS(t)
	channelstest.KeyCarried(t, func() (broker.Adapter, error) {
		return jetstream.New(natsURL(), jetstream.WithChannelOptions(timings))
	})
}
