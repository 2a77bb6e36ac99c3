// Package brokerenv tells the end-to-end tests where the brokers are and
// what to do when one is missing: skip in a plain `go test ./...`, fail when
// CHANNELS_E2E_REQUIRE=1 (set by `make test`, so in CI).
//
// Addresses come from environment variables with loopback defaults:
//
//	CHANNELS_REDIS_URL      redis://127.0.0.1:6379/0
//	CHANNELS_REDIS_CLUSTER  127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//	CHANNELS_AMQP_URL       amqp://guest:guest@127.0.0.1:5672/
//	CHANNELS_AMQP_MANAGEMENT_URL  (empty: http://<host of the AMQP URL>:15672)
//	CHANNELS_NATS_URL       nats://127.0.0.1:4222
//	CHANNELS_KAFKA_BROKERS  127.0.0.1:9092
package brokerenv

import (
	"context"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microchannels/channels/channelstest"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// RedisURL is the single-node Redis URL.
func RedisURL() string { return env("CHANNELS_REDIS_URL", "redis://127.0.0.1:6379/0") }

// RedisClusterAddrs are the Redis Cluster seed nodes.
func RedisClusterAddrs() []string {
	return list(env("CHANNELS_REDIS_CLUSTER", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"))
}

// AMQPURL is the RabbitMQ URL.
func AMQPURL() string { return env("CHANNELS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/") }

// AMQPManagementURL is the RabbitMQ management HTTP API, for
// amqp.WithManagementURL: empty (the adapter's default, port 15672 of the
// AMQP URL's host) unless CHANNELS_AMQP_MANAGEMENT_URL is set.
func AMQPManagementURL() string { return os.Getenv("CHANNELS_AMQP_MANAGEMENT_URL") }

// NATSURL is the NATS URL.
func NATSURL() string { return env("CHANNELS_NATS_URL", "nats://127.0.0.1:4222") }

// KafkaBrokers are the Kafka bootstrap brokers.
func KafkaBrokers() []string { return list(env("CHANNELS_KAFKA_BROKERS", "127.0.0.1:9092")) }

// Dial checks that a TCP address answers.
func Dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// DialURL checks that the host of a URL answers.
func DialURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	return Dial(u.Host)
}

var (
	probeMu sync.Mutex
	probed  = map[string]error{}
)

// Probe runs probe once per name and process and remembers the result: the
// first probe registered under a name decides for every later caller, so use
// the same name only for equivalent probes ("redis", "redis-cluster", "amqp",
// "nats", "kafka" are reachability checks of the brokers).
func Probe(name string, probe func() error) error {
	probeMu.Lock()
	defer probeMu.Unlock()
	if err, ok := probed[name]; ok {
		return err
	}
	err := probe()
	probed[name] = err
	return err
}

// PingRedis checks the single-node Redis answers PING.
func PingRedis() error {
	o, err := redis.ParseURL(RedisURL())
	if err != nil {
		return err
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// PingRedisCluster checks the Redis Cluster answers PING.
func PingRedisCluster() error {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: RedisClusterAddrs()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// PingAMQP checks RabbitMQ completes an AMQP handshake and opens a channel.
func PingAMQP() error {
	c, err := amqp091.DialConfig(AMQPURL(), amqp091.Config{Dial: amqp091.DefaultDial(3 * time.Second)})
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	return ch.Close()
}

// Need skips the test when the broker is unreachable, or fails it when
// brokers are required.
func Need(t testing.TB, name string, probe func() error) {
	t.Helper()
	channelstest.Need(t, name+" (start it with `make services`)", func() error { return Probe(name, probe) })
}
