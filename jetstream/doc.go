// Package jetstream is the NATS JetStream adapter of channels.
package jetstream
