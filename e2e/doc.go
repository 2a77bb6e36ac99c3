// Package e2e holds the conformance suite of channels: one ginkgo suite,
// written once, run against every adapter target (memory always; Redis,
// Redis Cluster, RabbitMQ, NATS JetStream and Kafka when their brokers are
// reachable, and required to be when CHANNELS_E2E_REQUIRE=1, as under
// `make test`). Every semantic of the design is asserted here, so each
// adapter is held to the same contract.
//
// Run it with `go test ./e2e/` (or `make test`, which starts the brokers).
package e2e
