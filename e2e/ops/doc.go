// Package ops holds the end-to-end tests of the operations tooling: the
// channels command (cmd/channels, run in-process through package
// cmd/channels/command, or built and run as a process where a test kills
// it) against every real broker, on dead letters written by the plugin and
// by a Node @moleculer/channels 0.1.8 service, and the quickstart example's
// cleanup.
//
// Each test is table-driven over the targets redis, redis-cluster, amqp,
// nats and kafka (the memory bus is covered by the command's own tests).
// A broker that does not answer skips its target, or fails it with
// CHANNELS_E2E_REQUIRE=1. Every name is made unique per test and removed
// at its end.
package ops
