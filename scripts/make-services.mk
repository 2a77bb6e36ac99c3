# Broker services and test environment, included by the Makefile.

CHANNELS_REDIS_URL      ?= redis://127.0.0.1:6379/0
CHANNELS_REDIS_CLUSTER  ?= 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
CHANNELS_AMQP_URL       ?= amqp://guest:guest@127.0.0.1:5672/
CHANNELS_NATS_URL       ?= nats://127.0.0.1:4222
CHANNELS_KAFKA_BROKERS  ?= 127.0.0.1:9092
export CHANNELS_REDIS_URL CHANNELS_REDIS_CLUSTER CHANNELS_AMQP_URL CHANNELS_NATS_URL CHANNELS_KAFKA_BROKERS

.PHONY: services services-down services-status services-restart interop-deps

## services: install (when missing) and start every broker on 127.0.0.1
services:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

## services-restart NAME=redis: stop and start one broker, keeping its data (NAME: redis,
## redis-cluster, rabbitmq, nats, kafka)
services-restart:
	@test -n "$(NAME)" || { echo "usage: make services-restart NAME=redis|redis-cluster|rabbitmq|nats|kafka"; exit 2; }
	scripts/services.sh restart $(NAME)

## interop-deps: the Node peer (@moleculer/channels) used by the interop tests
interop-deps: e2e/interop/node_modules/.installed

e2e/interop/node_modules/.installed: e2e/interop/package.json e2e/interop/package-lock.json
	npm ci --prefix e2e/interop --no-audit --no-fund --loglevel=error
	touch $@
