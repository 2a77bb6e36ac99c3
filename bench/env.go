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

// The cluster profiles of scripts/cluster.sh (make bench-cluster).

func redisClusterHAAddrs() []string {
	return list(env("CHANNELS_REDIS_CLUSTER_HA", "127.0.1.1:7101,127.0.1.2:7102,127.0.1.3:7103,127.0.1.4:7104,127.0.1.5:7105,127.0.1.6:7106"))
}

func natsClusterURL() string {
	return env("CHANNELS_NATS_CLUSTER_URL", "nats://127.0.0.1:4231,nats://127.0.0.1:4232,nats://127.0.0.1:4233")
}

func rabbitmqClusterURL() string {
	return env("CHANNELS_AMQP_CLUSTER_URL", "amqp://guest:guest@127.0.0.1:5681/;amqp://guest:guest@127.0.0.1:5682/;amqp://guest:guest@127.0.0.1:5683/")
}

func kafkaClusterBrokers() []string {
	return list(env("CHANNELS_KAFKA_CLUSTER_BROKERS", "127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193"))
}

func amqpURL() string { return env("CHANNELS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/") }

func natsURL() string { return env("CHANNELS_NATS_URL", "nats://127.0.0.1:4222") }

func kafkaBrokers() []string { return list(env("CHANNELS_KAFKA_BROKERS", "127.0.0.1:9092")) }
