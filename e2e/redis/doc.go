// Package redis holds the end-to-end tests specific to the Redis adapter:
// redelivery after a consumer process is killed, no concurrent redelivery
// of a live slow handler, wire compatibility with @moleculer/channels
// in both directions, and the operations tooling abilities (browsing and
// removing dead letters, removing a message, tailing, listing channels) on
// a single node and a Cluster.
package redis
