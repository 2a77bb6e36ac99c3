package amqp

import (
	"testing"
	"time"

	"github.com/microchannels/channels"
	chamqp "github.com/microchannels/channels/amqp"
	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
)

// TestPortableStartPositions: a RabbitMQ queue receives only what is routed
// after it is bound, so a new group starts at the newest messages and
// StartOldest and StartAt are refused at Register with an
// *UnsupportedError.
func TestPortableStartPositions(t *testing.T) {
	needAMQP(t)
	newAdapter := func() (broker.Adapter, error) { return chamqp.New(brokerenv.AMQPURL()) }
	channelstest.StartPositions(t, newAdapter, channelstest.StartPositionCases[0])
	for _, start := range []channels.StartPosition{channels.StartOldest, channels.StartAt(time.Now().Add(-time.Minute))} {
		channelstest.StartPositionRefused(t, newAdapter, start)
	}
}

// TestPortableKey: a keyed message keeps its key (one queue per group
// keeps the send order).
func TestPortableKey(t *testing.T) {
	needAMQP(t)
	channelstest.KeyCarried(t, func() (broker.Adapter, error) { return chamqp.New(brokerenv.AMQPURL()) })
}
