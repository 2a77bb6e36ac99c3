#!/usr/bin/env node
/*
 * The benchmark's tests on @moleculer/channels, run by the Go program (bench/node.go) for the
 * moleculer-channels column.
 *
 *   node bench.js --check      prints {"node":...,"moleculer":...,"channels":...} (versions)
 *   node bench.js --adapter memory|redis|redis-cluster|amqp|nats|kafka [--url ADDRESS]
 *                 --channel NAME --test latency|sequential|concurrent [--mif N] [--n N]
 *                 [--senders N] [--duration MS] [--warmup N] [--timeout MS]
 *
 * ADDRESS: the Redis, AMQP or NATS URL; comma-separated host:port seeds for redis-cluster and
 * kafka. One ServiceBroker with the channels middleware both sends and consumes (group "bench").
 *   latency:    one message in flight, each handler sends the next, for --duration ms after
 *               --warmup round trips; one-way time from the start of sendToChannel to the start
 *               of the handler.
 *   sequential: --n messages, each sendToChannel awaited before the next; first send to last
 *               handled.
 *   concurrent: the same from --senders concurrent loops.
 * Prints one JSON line: {"rate":msg/s,"p50":ms,"p99":ms,"messages":n}, or {"error":"..."} and
 * exits 1. Logs go to stderr.
 *
 * moleculer and @moleculer/channels are loaded from ../../e2e/interop/node_modules (the interop
 * peer's packages, `npm ci --prefix e2e/interop`), else through NODE_PATH.
 */
"use strict";

process.env.KAFKAJS_NO_PARTITIONER_WARNING = "1";

const path = require("path");

function load(name) {
	const local = path.join(__dirname, "..", "..", "e2e", "interop", "node_modules", name);
	try {
		return require(local);
	} catch (err) {
		if (err.code !== "MODULE_NOT_FOUND" || !String(err.message).includes(local)) throw err;
	}
	return require(name);
}

const { ServiceBroker } = load("moleculer");
const ChannelsMiddleware = load("@moleculer/channels").Middleware;

function parseArgs(argv) {
	const out = {};
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
		const next = argv[i + 1];
		if (next === undefined || next.startsWith("--")) out[a.slice(2)] = true;
		else {
			out[a.slice(2)] = next;
			i++;
		}
	}
	return out;
}

function hostPorts(list) {
	return list.split(",").map(s => {
		const [host, port] = s.trim().split(":");
		return { host, port: parseInt(port, 10) };
	});
}

function adapterFor(kind, url, mif) {
	const base = { maxInFlight: mif, maxRetries: 0 };
	switch (kind) {
		case "memory":
			return { type: "Fake", options: base };
		case "redis":
			return { type: "Redis", options: Object.assign(base, { redis: { url } }) };
		case "redis-cluster":
			return { type: "Redis", options: Object.assign(base, { redis: { cluster: { nodes: hostPorts(url) } } }) };
		case "amqp":
			// persistent messages, as the other columns send; 0.1.8 publishes without confirms
			return { type: "AMQP", options: Object.assign(base, { amqp: { url, messageOptions: { persistent: true } } }) };
		case "nats":
			return { type: "NATS", options: Object.assign(base, { nats: { url } }) };
		case "kafka":
			return { type: "Kafka", options: Object.assign(base, { kafka: { brokers: url.split(",") } }) };
	}
	throw new Error(`unknown adapter ${kind}`);
}

const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0); // ns since start

function percentile(sorted, p) {
	if (sorted.length === 0) return 0;
	return sorted[Math.round((sorted.length - 1) * p)];
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function main() {
	const args = parseArgs(process.argv.slice(2));
	if (args.check) {
		process.stdout.write(
			JSON.stringify({
				node: process.version,
				moleculer: load("moleculer/package.json").version,
				channels: load("@moleculer/channels/package.json").version
			}) + "\n"
		);
		return 0;
	}
	const kind = args.adapter;
	const channel = args.channel;
	const test = args.test;
	const mif = parseInt(args.mif || "1", 10);
	const n = parseInt(args.n || "10000", 10);
	const senders = parseInt(args.senders || "64", 10);
	const duration = parseInt(args.duration || "5000", 10) * 1e6; // ns
	const warmupPings = parseInt(args.warmup || "100", 10);
	const timeout = parseInt(args.timeout || "120000", 10);
	if (!kind || !channel || !["latency", "sequential", "concurrent"].includes(test)) {
		throw new Error("usage: bench.js --adapter KIND [--url ADDRESS] --channel NAME --test latency|sequential|concurrent ...");
	}

	const broker = new ServiceBroker({
		nodeID: `bench-${process.pid}`,
		logger: { type: "Console", options: { level: "warn", colors: false, moduleColors: false } },
		// The Fake adapter runs handlers behind moleculer's event bulkhead, whose default queue
		// (100) drops the events past it: unbounded, every message is kept, as on the other buses.
		bulkhead: { enabled: false, concurrency: 10, maxQueueSize: 0 },
		middlewares: [ChannelsMiddleware({ adapter: adapterFor(kind, args.url, mif) })]
	});
	// Keep stdout for the JSON line.
	console.log = (...a) => process.stderr.write(a.join(" ") + "\n");
	console.info = console.log;
	console.warn = console.log;

	if (kind === "kafka") {
		// @moleculer/channels relies on topic auto-creation, which races with the first
		// subscription and gives the broker's default partition count: create the topic up
		// front, with the partitions of the Go columns (bench/broker_kafka.go: 10 for the
		// throughput tests, 1 for latency).
		const { Kafka, logLevel } = load("kafkajs");
		const admin = new Kafka({ brokers: args.url.split(","), logLevel: logLevel.ERROR }).admin();
		await admin.connect();
		const numPartitions = test === "latency" ? 1 : 10;
		await admin.createTopics({ topics: [{ topic: channel, numPartitions }], waitForLeaders: true });
		await admin.disconnect();
	}
	const sendOpts = kind === "kafka" ? { acks: -1 } : {};
	// AMQP: 0.1.8 rejects a send with "Write buffer is full" when amqplib's publish returns false,
	// which only asks the caller to wait for the channel's drain event (amqplib did take the
	// message): wait for it, as a caller of 0.1.8 must, and count the send as done.
	let drained = null;
	const drain = () => {
		if (!drained) {
			drained = new Promise(resolve =>
				broker.channelAdapter.channel.once("drain", () => {
					drained = null;
					resolve();
				})
			);
		}
		return drained;
	};
	const send = async (i, t) => {
		try {
			await broker.sendToChannel(channel, { i, t }, Object.assign({}, sendOpts));
		} catch (err) {
			if (kind !== "amqp" || !/Write buffer is full/.test(err && err.message)) throw err;
			await drain();
		}
	};

	let warmed = null;
	let failed = null;
	const fail = err => {
		if (!failed) failed = err;
	};
	// latency
	const oneWay = [];
	let last = -1; // the last ping handled
	let startAt = 0;
	let endAt = 0;
	let finishLatency;
	const latencyDone = new Promise(resolve => (finishLatency = resolve));
	// throughput
	const seen = new Uint8Array(n);
	let count = 0;
	let finishThroughput;
	const throughputDone = new Promise(resolve => (finishThroughput = resolve));

	const chan = {
		group: "bench",
		maxInFlight: mif,
		async handler(payload) {
			const t1 = now();
			const { i, t } = payload;
			if (i < 0) {
				if (warmed) warmed();
				return;
			}
			if (test === "latency") {
				if (i <= last) return; // a redelivery: the ping went on already
				last = i;
				if (i >= warmupPings) {
					if (i === warmupPings) startAt = t;
					oneWay.push(t1 - t);
					if (t1 - startAt >= duration) {
						endAt = t1;
						finishLatency();
						return;
					}
				}
				try {
					await send(i + 1, now());
				} catch (err) {
					fail(err);
					finishLatency();
				}
				return;
			}
			if (i < n && !seen[i]) {
				seen[i] = 1;
				if (++count === n) {
					endAt = now();
					finishThroughput();
				}
			}
		}
	};
	if (kind === "kafka") chan.kafka = { fromBeginning: true };
	broker.createService({ name: "bench", channels: { [channel]: chan } });
	await broker.start();

	const timer = setTimeout(() => {
		process.stdout.write(JSON.stringify({ error: `timeout after ${timeout} ms (${test}: ${test === "latency" ? oneWay.length : count} measured)` }) + "\n");
		process.exit(1);
	}, timeout);

	// warm-up: until one warm-up message is handled
	for (;;) {
		const got = new Promise(resolve => (warmed = resolve));
		await send(-1, now());
		const ok = await Promise.race([got.then(() => true), sleep(1000).then(() => false)]);
		if (ok) break;
	}
	warmed = null;
	await sleep(100);

	let result;
	if (test === "latency") {
		await send(0, now());
		await latencyDone;
		if (failed) throw failed;
		const sorted = Float64Array.from(oneWay).sort();
		result = {
			rate: oneWay.length / ((endAt - startAt) / 1e9),
			p50: percentile(sorted, 0.5) / 1e6,
			p99: percentile(sorted, 0.99) / 1e6,
			messages: oneWay.length
		};
	} else {
		const start = now();
		if (test === "sequential") {
			for (let i = 0; i < n; i++) await send(i, now());
		} else {
			let next = 0;
			const loop = async () => {
				while (next < n) await send(next++, now());
			};
			await Promise.all(Array.from({ length: senders }, loop));
		}
		await throughputDone;
		result = { rate: n / ((endAt - start) / 1e9), messages: n };
	}
	clearTimeout(timer);
	process.stdout.write(JSON.stringify(result) + "\n");
	await broker.stop();
	return 0;
}

main().then(
	code => process.exit(code),
	err => {
		process.stdout.write(JSON.stringify({ error: String(err && err.message ? err.message : err) }) + "\n");
		process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
		process.exit(1);
	}
);
