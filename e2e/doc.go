// Package e2e holds the conformance suite of channels: one ginkgo suite,
// written once, run against every adapter target (memory always; Redis,
// Redis Cluster, RabbitMQ, NATS JetStream and Kafka when their brokers are
// reachable, and required to be when CHANNELS_E2E_REQUIRE=1, as under
// `make test`). Every semantic of the design is asserted here, so each
// adapter is held to the same contract.
//
// The fault suite (fault_test.go) runs next to it on the same targets:
// consumer processes killed mid-stream, broker restarts, stops under load,
// slow handlers, hostile raw entries and a broker down at start. Each
// scenario prints a "fault <scenario> <target>: sent=... lost=..." line.
// Its specs labelled "serial" restart or stop the shared brokers and run
// only with CHANNELS_E2E_SERIAL=1 (the second phase of `make test`).
//
// Run it with `go test ./e2e/` (or `make test`, which starts the brokers).
package e2e
