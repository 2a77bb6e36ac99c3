package redis

import (
	"testing"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/redis"
)

// TestPortableStartPositions: a group created after messages were sent on
// its stream starts at the newest ("$"), the oldest ("0") or the time
// (the last entry id before it) its Channel.Start says.
func TestPortableStartPositions(t *testing.T) {
	needRedis(t)
	channelstest.StartPositions(t, func() (broker.Adapter, error) { return redis.New(redisURL()) })
}

// TestPortableKey: a keyed message keeps its key (one stream per channel
// keeps the send order).
func TestPortableKey(t *testing.T) {
	needRedis(t)
	channelstest.KeyCarried(t, func() (broker.Adapter, error) { return redis.New(redisURL()) })
}
