package redis

import (
	"testing"

	"github.com/microchannels/channels/channelstest"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/redis"
)

func needRedis(t *testing.T) {
	t.Helper()
	brokerenv.Need(t, "redis", brokerenv.PingRedis)
}

var (
	unique       = channelstest.Unique
	eventually   = channelstest.EventuallyTrue
	consistently = channelstest.ConsistentlyTrue
)

// startPlugin starts a plugin on the test Redis with the given consumer
// timings and schema, and stops it at the end of the test.
func startPlugin(t *testing.T, timings redis.ChannelOptions, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	return startPluginAt(t, brokerenv.RedisURL(), timings, schema, opts...)
}

// startPluginAt is startPlugin on the Redis at url.
func startPluginAt(t *testing.T, url string, timings redis.ChannelOptions, schema any, opts ...channels.Option) *channels.Plugin {
	t.Helper()
	a, err := redis.New(url, redis.WithChannelOptions(timings))
	if err != nil {
		t.Fatal(err)
	}
	return channelstest.StartPlugin(t, a, schema, opts...)
}

// service is the schema of a test service.
type service = channelstest.Service

func redisURL() string { return brokerenv.RedisURL() }
