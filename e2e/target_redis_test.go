package e2e

import (
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/microchannels/channels/broker"
	"github.com/microchannels/channels/channelstest"
	"github.com/microchannels/channels/e2e/brokerenv"
	"github.com/microchannels/channels/redis"
)

// Short timings so that claims of failed messages happen within the suite's deadlines.
var redisTestTimings = redis.ChannelOptions{MinIdleTime: time.Second, ClaimInterval: 50 * time.Millisecond, ReadTimeout: 500 * time.Millisecond}

func init() {
	restart, down, up := redisServiceHooks("redis", func() []string { return redisURLAddr(brokerenv.RedisURL()) })
	registerTarget(channelstest.Target{
		Name:           "redis",
		NewAdapter:     func() (broker.Adapter, error) { return redis.New(brokerenv.RedisURL()) },
		ChannelOptions: []any{redisTestTimings},
		Probe:          func() error { return brokerenv.Probe("redis", brokerenv.PingRedis) },
		Processes:      true,
		ClaimTime:      redisTestTimings.MinIdleTime,
		Linked: channelstest.LinkedURL(brokerenv.RedisURL, "6379", func(u string) (broker.Adapter, error) {
			return redis.New(u)
		}),
		Restart:    restart,
		BrokerDown: down,
		BrokerUp:   up,
		Hostile: redisHostile(func() goredis.UniversalClient {
			o, err := goredis.ParseURL(brokerenv.RedisURL())
			if err != nil {
				o = &goredis.Options{Addr: "127.0.0.1:6379"}
			}
			return goredis.NewClient(o)
		}),
	})
	crestart, cdown, cup := redisServiceHooks("redis-cluster", brokerenv.RedisClusterAddrs)
	registerTarget(channelstest.Target{
		Name: "redis-cluster",
		NewAdapter: func() (broker.Adapter, error) {
			return redis.NewFromOptions(&goredis.UniversalOptions{Addrs: brokerenv.RedisClusterAddrs(), IsClusterMode: true})
		},
		ChannelOptions: []any{redisTestTimings},
		Probe:          func() error { return brokerenv.Probe("redis-cluster", brokerenv.PingRedisCluster) },
		Processes:      true,
		ClaimTime:      redisTestTimings.MinIdleTime,
		Linked: func() (broker.Adapter, *channelstest.Links, error) {
			ls := channelstest.NewLinks(brokerenv.RedisClusterAddrs()...)
			a, err := redis.NewFromOptions(&goredis.UniversalOptions{Addrs: brokerenv.RedisClusterAddrs(),
				IsClusterMode: true, Dialer: ls.Dial})
			return a, ls, err
		},
		Restart:    crestart,
		BrokerDown: cdown,
		BrokerUp:   cup,
		Hostile: redisHostile(func() goredis.UniversalClient {
			return goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: brokerenv.RedisClusterAddrs()})
		}),
	})
}
