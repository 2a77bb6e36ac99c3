# channels — reliable broker-backed channels for go-micro v4.
#
#   make demo    run the quickstart on an embedded NATS JetStream (no setup; -adapter memory:// etc. with ARGS)
#   make test    start the brokers, run unit tests and the e2e suite on every adapter
#   make test-cluster  each clustered broker in turn (3 nodes): node-kill, rolling-restart, minority-partitioned
#   make bench   each adapter side by side with its raw driver, Watermill and @moleculer/channels (bench-memory: per-message allocations)
#   make lint    gofmt check + go vet
#   make fuzz    fuzz every decoder of wire data for FUZZTIME each (fuzz-short: 5s each)

GO       ?= go
GOFLAGS  ?=
PKGS     ?= ./...

-include scripts/make-services.mk
.PHONY: all demo test test-cluster unit lint fmt bench bench-quick bench-memory fuzz fuzz-short

all: lint test

demo:
	$(GO) run ./examples/quickstart $(ARGS)

## unit: unit tests and the conformance suite on the memory adapter only, no broker needed
unit:
	$(GO) test -race -count=1 $(PKGS)

# Where the fault suite appends its "fault <scenario> <target>: ..." lines during `make test`.
FAULT_REPORT ?= $(CURDIR)/fault-report.out

## test: brokers up (installed when missing), then everything with -race; a missing broker fails the run.
## Phase 1 runs every package; phase 2 runs alone the e2e specs labelled "serial", which restart or
## stop the shared brokers (phase 1 skips them), then the TestSerial* tests of the broker packages
## (a RabbitMQ memory alarm blocks every publisher of the broker). Both phases always run; the fault suite's lines
## are printed at the end.
test: services interop-deps
	@rm -f $(FAULT_REPORT); status=0; \
	echo "== phase 1: every package"; \
	CHANNELS_E2E_REQUIRE=1 CHANNELS_FAULT_REPORT=$(FAULT_REPORT) \
		$(GO) test -race -count=1 -timeout 20m $(PKGS) || status=1; \
	echo "== phase 2: serial e2e specs (broker restarts and stops), alone"; \
	CHANNELS_E2E_REQUIRE=1 CHANNELS_E2E_SERIAL=1 CHANNELS_FAULT_REPORT=$(FAULT_REPORT) \
		$(GO) test -race -count=1 -timeout 10m ./e2e -run TestConformance -args -ginkgo.label-filter=serial || status=1; \
	CHANNELS_E2E_REQUIRE=1 CHANNELS_E2E_SERIAL=1 \
		$(GO) test -race -count=1 -timeout 5m -run '^TestSerial' ./e2e/... || status=1; \
	echo "== fault suite"; cat $(FAULT_REPORT) 2>/dev/null || echo "(no fault lines)"; \
	exit $$status

## test-cluster: for each profile of CLUSTERS in turn, bring its 3 nodes up (scripts/cluster.sh),
## run the cluster fault scenarios on it (e2e/cluster), take it down. One cluster at a time (2 cores).
CLUSTERS ?= redis-cluster-ha nats-cluster rabbitmq-cluster kafka-cluster

test-cluster:
	@status=0; for p in $(CLUSTERS); do \
		echo "== cluster $$p"; \
		if scripts/cluster.sh $$p up; then \
			CHANNELS_E2E_REQUIRE=1 CHANNELS_CLUSTER=$$p CHANNELS_FAULT_REPORT=$(FAULT_REPORT).cluster \
				$(GO) test -race -count=1 -timeout 12m ./e2e/cluster -run TestCluster -args -ginkgo.label-filter=cluster || status=1; \
		else status=1; fi; \
		scripts/cluster.sh $$p down || true; \
	done; \
	echo "== cluster fault lines"; cat $(FAULT_REPORT).cluster 2>/dev/null || echo "(none)"; rm -f $(FAULT_REPORT).cluster; \
	exit $$status

## bench: the program in bench/ (a Go module of its own), brokers up as for test: for each adapter,
## latency, sequential, concurrent and batch sends with channels, the raw driver, Watermill and
## @moleculer/channels (the interop peer's packages), 3 repetitions; prints the table and writes
## docs/bench.md, docs/bench.png, docs/bench.json and the README's table. Not part of test.
##   make bench ADAPTERS=redis,nats   a selection (printed only, unless BENCHOUT is set)
##   make bench BENCHFLAGS='-reps 1 -latency 2s'   any flag of `cd bench && go run . -h`
## bench-quick: a smoke run (1,000 messages, 1 repetition, 1 s of latency), printed only.
## bench-memory: the memory hot path (go test -bench of the library).
ADAPTERS   ?=
BENCHFLAGS ?=
BENCHOUT   ?= $(if $(ADAPTERS),,-out ../docs -readme ../README.md)
BENCHSEL    = $(if $(ADAPTERS),-adapters $(ADAPTERS))

bench: services interop-deps
	cd bench && $(GO) run . $(BENCHSEL) $(BENCHOUT) $(BENCHFLAGS)

bench-quick: services interop-deps
	cd bench && $(GO) run . -quick $(BENCHSEL) $(BENCHFLAGS)

## bench-cluster: for each profile of CLUSTERS in turn, bring it up (scripts/cluster.sh), bench its
## adapter (channels and raw, the replication settings of docs/benchmarks.md#clusters) with its rows
## merged into docs/bench.json, docs/bench.md and the README's table (the rows of the other adapters
## kept), take it down. One cluster at a time. BENCHCLUSTERFLAGS: e.g. '-reps 1 -n 2000 -latency 1s'.
BENCHCLUSTERFLAGS ?=
BENCHBIN ?= $(CURDIR)/.services/bench/bench

.PHONY: bench-cluster
bench-cluster:
	cd bench && $(GO) build -o $(BENCHBIN) .
	@status=0; for p in $(CLUSTERS); do \
		echo "== bench on cluster $$p"; \
		if scripts/cluster.sh $$p up; then \
			(cd bench && $(BENCHBIN) -adapters $$p -impls channels,raw -merge ../docs/bench.json \
				-out ../docs -readme ../README.md $(BENCHCLUSTERFLAGS)) || status=1; \
		else status=1; fi; \
		scripts/cluster.sh $$p down || true; \
	done; \
	exit $$status

## bench-memory: the per-message budgets (ns, bytes, allocations), no broker needed: the dispatch
## path on the memory bus (send and receive together, then each alone), the interceptor chain,
## the serializers and the header codec. BENCHMEMFLAGS adds flags (-count 3 -benchtime 2s).
BENCH_MEMORY ?= Dispatch|Interceptor|Serializer|Headers
BENCHMEMFLAGS ?= -count 1
bench-memory:
	$(GO) test -run '^$$' -bench '$(BENCH_MEMORY)' -benchmem $(BENCHMEMFLAGS) . ./broker ./hooks

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd bench && $(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

## fuzz: each fuzz target of the decoders of wire data for FUZZTIME, under a soft memory limit
## (the fuzz functions set one too). The seeds and testdata/fuzz/ run with every go test.
FUZZTIME         ?= 30s
FUZZMINIMIZETIME ?= 5s
FUZZENV          ?= GOMEMLIMIT=512MiB
FUZZFLAGS         = -run '^$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME)

fuzz:
	$(FUZZENV) $(GO) test $(FUZZFLAGS) -fuzz '^FuzzMsgPackUnmarshal$$' ./broker
	$(FUZZENV) $(GO) test $(FUZZFLAGS) -fuzz '^FuzzJSONUnmarshal$$' ./broker
	$(FUZZENV) $(GO) test $(FUZZFLAGS) -fuzz '^FuzzDecodeHeadersJSON$$' ./broker
	$(FUZZENV) $(GO) test $(FUZZFLAGS) -fuzz '^FuzzDecodeHeadersMsgPack$$' ./broker
	$(FUZZENV) $(GO) test $(FUZZFLAGS) -fuzz '^FuzzErrorFromHeaders$$' ./broker
	$(FUZZENV) $(GO) test $(FUZZFLAGS) -fuzz '^FuzzContextHeaders$$' .

fuzz-short:
	$(MAKE) fuzz FUZZTIME=5s FUZZMINIMIZETIME=2s
