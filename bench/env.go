package main

import (
	"os"
	"strings"
)

// Broker addresses come from the environment variables of the test suite,
// with the same loopback defaults (scripts/make-services.mk exports them).
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

func redisURL() string { return env("CHANNELS_REDIS_URL", "redis://127.0.0.1:6379/0") }

func redisClusterAddrs() []string {
	return list(env("CHANNELS_REDIS_CLUSTER", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"))
}

func amqpURL() string { return env("CHANNELS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/") }

func natsURL() string { return env("CHANNELS_NATS_URL", "nats://127.0.0.1:4222") }

func kafkaBrokers() []string { return list(env("CHANNELS_KAFKA_BROKERS", "127.0.0.1:9092")) }
