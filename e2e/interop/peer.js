#!/usr/bin/env node
/*
 * A moleculer ServiceBroker with the real @moleculer/channels middleware, driven from the command
 * line by the Go interop tests.
 *
 *   node peer.js send    --adapter URL --channel NAME [--count N] [--payload JSON] [--headers JSON]
 *                        [--meta JSON] [--namespace NS] [--serializer JSON|MsgPack]
 *   node peer.js consume --adapter URL --channel NAME [--group G] [--count N] [--timeout MS]
 *                        [--context] [--fail] [--max-retries N] [--dead-letter QUEUE]
 *                        [--namespace NS] [--serializer JSON|MsgPack] [--forward CHANNEL]
 *   Kafka only: [--partitions N] for the topic, created up front (default 1).
 *
 * Output is JSON, one object per line, on stdout:
 *   send:    {"sent":i,"payload":...} per message, once sendToChannel resolved (Redis XADD and
 *            NATS/Kafka publish acknowledged; AMQP 0.1.8 publishes without confirms, so only
 *            written, but the graceful stop closes the connection after the broker took it);
 *            a payload object gets a field "i" with the index unless it has one.
 *   consume: {"ready":true} once subscribed (send after this line), then per message
 *            {"channel","group","payload","headers","meta"} (meta only with --context; headers
 *            are the adapter's raw headers as a flat string map). The group defaults to
 *            "consumer" (the service name). Exits 0 after --count messages (a few more lines
 *            may come while it stops), 1 after --timeout with an error on stderr.
 *            With --fail every handler call throws, so it never finishes by itself: it runs
 *            until --timeout (exit 1) or until it is killed.
 *            With --forward each message is sent on to CHANNEL with its payload and its user
 *            headers (the adapter's own x-* headers left out), as a Node service in a chain
 *            would: trace headers (traceparent, tracestate) ride along.
 * Logs go to stderr. URLs: redis://, amqp://, nats://, kafka:// (NATS is passed as an object,
 * because the 0.1.x string form ignores the URL).
 */
"use strict";

process.env.KAFKAJS_NO_PARTITIONER_WARNING = "1";

const { ServiceBroker } = require("moleculer");
const ChannelsMiddleware = require("@moleculer/channels").Middleware;

function parseArgs(argv) {
	const out = { _: [] };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		if (a.startsWith("--")) {
			const key = a.slice(2);
			const next = argv[i + 1];
			if (next === undefined || next.startsWith("--")) out[key] = true;
			else {
				out[key] = next;
				i++;
			}
		} else out._.push(a);
	}
	return out;
}

function adapterFor(url, extra) {
	const base = Object.assign({}, extra);
	if (url.startsWith("nats://")) {
		return { type: "NATS", options: Object.assign(base, { nats: { url } }) };
	}
	if (url.startsWith("redis://") || url.startsWith("rediss://")) {
		return { type: "Redis", options: Object.assign(base, { redis: { url } }) };
	}
	if (url.startsWith("amqp://") || url.startsWith("amqps://")) {
		return { type: "AMQP", options: Object.assign(base, { amqp: { url } }) };
	}
	if (url.startsWith("kafka://")) {
		return { type: "Kafka", options: Object.assign(base, { kafka: { brokers: [url.replace("kafka://", "")] } }) };
	}
	throw new Error(`unsupported adapter URL ${url}`);
}

function out(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

function plainHeaders(h) {
	if (!h) return {};
	const res = {};
	for (const [k, v] of Object.entries(h)) res[k] = v == null ? v : Buffer.isBuffer(v) ? v.toString() : "" + v;
	return res;
}

async function main() {
	const args = parseArgs(process.argv.slice(2));
	const cmd = args._[0];
	if (!args.adapter || !args.channel || !["send", "consume"].includes(cmd)) {
		process.stderr.write("usage: node peer.js send|consume --adapter URL --channel NAME ...\n");
		process.exit(2);
	}
	const count = parseInt(args.count || "1", 10);
	const adapterOpts = {};
	if (args.namespace !== undefined) adapterOpts.prefix = args.namespace;
	if (args.serializer) adapterOpts.serializer = args.serializer;
	if (args["max-retries"] !== undefined) adapterOpts.maxRetries = parseInt(args["max-retries"], 10);
	if (args["dead-letter"]) adapterOpts.deadLettering = { enabled: true, queueName: args["dead-letter"] };
	const adapter = adapterFor(args.adapter, adapterOpts);
	const isKafka = args.adapter.startsWith("kafka://");

	const broker = new ServiceBroker({
		nodeID: `interop-peer-${process.pid}`,
		logger: { type: "Console", options: { level: "warn", colors: false, moduleColors: false } },
		middlewares: [ChannelsMiddleware({ adapter, context: !!args.context })]
	});
	// Keep stdout for JSON: route moleculer's console logger to stderr.
	console.log = (...a) => process.stderr.write(a.join(" ") + "\n");
	console.info = console.log;
	console.warn = console.log;

	if (isKafka) {
		// @moleculer/channels relies on topic auto-creation, which races with the first
		// subscription; create the topic up front, as its own test suite does.
		const { Kafka, logLevel } = require("kafkajs");
		const admin = new Kafka({ brokers: [args.adapter.replace("kafka://", "")], logLevel: logLevel.ERROR }).admin();
		await admin.connect();
		const topic = args.namespace ? `${args.namespace}.${args.channel}` : args.channel;
		await admin.createTopics({
			topics: [{ topic, numPartitions: parseInt(args.partitions || "1", 10) }],
			waitForLeaders: true
		});
		await admin.disconnect();
	}

	if (cmd === "send") {
		await broker.start();
		const payload = args.payload ? JSON.parse(args.payload) : {};
		const headers = args.headers ? JSON.parse(args.headers) : undefined;
		const meta = args.meta ? JSON.parse(args.meta) : undefined;
		for (let i = 0; i < count; i++) {
			let p = payload;
			if (p && typeof p === "object" && !Array.isArray(p) && p.i === undefined) p = Object.assign({ i }, p);
			const opts = {};
			if (headers) opts.headers = Object.assign({}, headers);
			if (meta) opts.ctx = broker.ContextFactory.create(broker, null, {}, { meta });
			if (isKafka) opts.acks = -1;
			await broker.sendToChannel(args.channel, p, opts);
			out({ sent: i, payload: p });
		}
		await broker.stop();
		return 0;
	}

	// consume
	let received = 0;
	let finish;
	const done = new Promise(resolve => (finish = resolve));
	const chan = {
		group: args.group || undefined,
		context: !!args.context,
		async handler(first, raw) {
			const a = broker.channelAdapter;
			const rec = { channel: args.channel, group: args.group || "consumer" };
			if (args.context) {
				rec.payload = first.params;
				rec.meta = first.meta;
			} else {
				rec.payload = first;
			}
			rec.headers = plainHeaders(a.parseMessageHeaders(raw));
			out(rec);
			if (args.forward) {
				const headers = {};
				for (const [k, v] of Object.entries(rec.headers)) if (!k.startsWith("x-")) headers[k] = v;
				await broker.sendToChannel(args.forward, rec.payload, { headers });
			}
			received++;
			if (args.fail) throw new Error("Something happened");
			if (received >= count) finish();
		}
	};
	if (isKafka) chan.kafka = { fromBeginning: true };
	if (args.adapter.startsWith("redis")) chan.redis = { minIdleTime: 100, claimInterval: 50, processingAttemptsInterval: 50 };
	broker.createService({ name: "consumer", channels: { [args.channel]: chan } });
	await broker.start();
	// Kafka: the group starts from the beginning of the (test-unique) topic, so messages sent
	// while kafkajs is still joining the group are not missed.
	out({ ready: true });
	const timeout = parseInt(args.timeout || "30000", 10);
	const timer = setTimeout(() => {
		process.stderr.write(`timeout: received ${received} of ${count} messages\n`);
		process.exit(1);
	}, timeout);
	await done;
	clearTimeout(timer);
	await broker.stop();
	return 0;
}

main().then(
	code => process.exit(code),
	err => {
		process.stderr.write(`peer failed: ${err && err.stack ? err.stack : err}\n`);
		process.exit(1);
	}
);
