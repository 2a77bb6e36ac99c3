// Package kafka holds the end-to-end tests specific to the Kafka adapter:
// interoperability with a Node @moleculer/channels 0.1.8 (kafkajs) service,
// in both directions, dead letters and retries included.
package kafka
