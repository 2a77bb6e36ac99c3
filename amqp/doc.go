// Package amqp is the RabbitMQ (AMQP 0-9-1) adapter of channels.
package amqp
