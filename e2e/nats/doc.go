// Package nats holds the end-to-end tests specific to the NATS JetStream
// adapter: a new group replaying a channel from a start time, message-id
// deduplication and publish expectations, stream and consumer updates (and
// the typed error of an update the server refuses), redelivery after a
// consumer process is killed, and wire compatibility with
// @moleculer/channels 0.1.8 in both directions, dead letters included, and
// the operations tooling abilities (browsing and removing dead letters,
// removing a message, tailing, listing channels).
package nats
