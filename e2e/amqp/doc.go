// Package amqp holds the RabbitMQ-specific end-to-end tests: names and
// headers on the wire, publisher confirms, recovery of closed channels and
// lost connections, a killed consumer process, and interoperability with
// @moleculer/channels 0.1.8 in both directions, dead letters included.
package amqp
