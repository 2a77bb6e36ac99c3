package e2e

import (
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/redis"
)

// Short timings so that claims of failed messages happen within the suite's deadlines.
var redisTestTimings = redis.ChannelOptions{MinIdleTime: time.Second, ClaimInterval: 50 * time.Millisecond, ReadTimeout: 500 * time.Millisecond}

func init() {
	RegisterTarget(Target{
		Name:           "redis",
		NewAdapter:     func() (broker.Adapter, error) { return redis.New(brokerenv.RedisURL()) },
		ChannelOptions: []any{redisTestTimings},
		Probe:          func() error { return brokerenv.Probe("redis", brokerenv.PingRedis) },
	})
	RegisterTarget(Target{
		Name: "redis-cluster",
		NewAdapter: func() (broker.Adapter, error) {
			return redis.NewFromOptions(&goredis.UniversalOptions{Addrs: brokerenv.RedisClusterAddrs(), IsClusterMode: true})
		},
		ChannelOptions: []any{redisTestTimings},
		Probe:          func() error { return brokerenv.Probe("redis-cluster", brokerenv.PingRedisCluster) },
	})
}
