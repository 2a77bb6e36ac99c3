// Package e2e runs the shared suite of package channelstest (conformance,
// fault, limits, observability) against this repository's brokers: Redis,
// Redis Cluster, RabbitMQ, NATS JetStream (a server and the embedded one)
// and Kafka, each a target_<name>_test.go file. A broker that does not
// answer skips its target, and fails the run when CHANNELS_E2E_REQUIRE=1,
// as under `make test`.
//
// The fault scenarios print a "fault <scenario> <target>: sent=... lost=..."
// line each. The specs labelled "serial" restart or stop the shared brokers
// (scripts/services.sh) and run only with CHANNELS_E2E_SERIAL=1 (the second
// phase of `make test`).
//
// The subpackages hold each broker's own end-to-end tests; interop runs
// @moleculer/channels beside the library.
//
// Run it with `go test ./e2e/...` (or `make test`, which starts the brokers).
package e2e
