# channels — reliable broker-backed channels for go-micro v4.
#
#   make demo    run the quickstart on the in-memory bus (no setup)
#   make test    start the brokers, run unit tests and the e2e suite on every adapter
#   make bench   throughput and latency next to the raw drivers (bench-memory: per-message allocations)
#   make lint    gofmt check + go vet
#   make fuzz    fuzz every decoder of wire data for FUZZTIME each (fuzz-short: 5s each)

GO       ?= go
GOFLAGS  ?=
PKGS     ?= ./...

-include scripts/make-services.mk
.PHONY: all demo test unit lint fmt bench bench-memory bench-redis bench-amqp bench-nats fuzz fuzz-short

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
## stop the shared brokers (phase 1 skips them). Both phases always run; the fault suite's lines
## are printed at the end.
test: services interop-deps
	@rm -f $(FAULT_REPORT); status=0; \
	echo "== phase 1: every package"; \
	CHANNELS_E2E_REQUIRE=1 CHANNELS_FAULT_REPORT=$(FAULT_REPORT) \
		$(GO) test -race -count=1 -timeout 15m $(PKGS) || status=1; \
	echo "== phase 2: serial e2e specs (broker restarts and stops), alone"; \
	CHANNELS_E2E_REQUIRE=1 CHANNELS_E2E_SERIAL=1 CHANNELS_FAULT_REPORT=$(FAULT_REPORT) \
		$(GO) test -race -count=1 -timeout 10m ./e2e -run TestConformance -args -ginkgo.label-filter=serial || status=1; \
	echo "== fault suite"; cat $(FAULT_REPORT) 2>/dev/null || echo "(no fault lines)"; \
	exit $$status

## bench: the memory hot path, then each broker next to its raw driver (brokers started as for test)
bench: bench-memory bench-redis bench-amqp bench-nats

## bench-memory: the per-message budgets (ns, bytes, allocations), no broker needed: the dispatch
## path on the memory bus (send and receive together, then each alone), the interceptor chain,
## the serializers and the header codec. BENCHFLAGS adds flags (-count 3 -benchtime 2s).
BENCH_MEMORY ?= Dispatch|Interceptor|Serializer|Headers
BENCHFLAGS   ?= -count 1
bench-memory:
	$(GO) test -run '^$$' -bench '$(BENCH_MEMORY)' -benchmem $(BENCHFLAGS) . ./broker ./hooks

bench-redis: services
	$(GO) run ./bench -adapter redis -n 10000

bench-amqp: services
	$(GO) run ./bench -adapter amqp -n 10000

bench-nats: services
	$(GO) run ./bench -adapter nats -n 10000

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

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
