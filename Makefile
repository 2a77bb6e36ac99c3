# channels — reliable broker-backed channels for go-micro v4.
#
#   make demo    run the quickstart on the in-memory bus (no setup)
#   make test    start the brokers, run unit tests and the e2e suite on every adapter
#   make bench   throughput and latency next to the raw drivers
#   make lint    gofmt check + go vet
#   make fuzz    fuzz every decoder of wire data for FUZZTIME each (fuzz-short: 5s each)

GO       ?= go
GOFLAGS  ?=
PKGS     ?= ./...

-include scripts/make-services.mk
.PHONY: all demo test unit lint fmt bench bench-memory bench-redis fuzz fuzz-short

all: lint test

demo:
	$(GO) run ./examples/quickstart $(ARGS)

## unit: unit tests and the conformance suite on the memory adapter only, no broker needed
unit:
	$(GO) test -race -count=1 $(PKGS)

## test: brokers up (installed when missing), then everything with -race; a missing broker fails the run
test: services interop-deps
	CHANNELS_E2E_REQUIRE=1 $(GO) test -race -count=1 -timeout 15m $(PKGS)

## bench: the memory hot path, then each broker next to its raw driver (brokers started as for test)
bench: bench-memory bench-redis

bench-memory:
	$(GO) test -run '^$$' -bench Dispatch -benchmem -count 1 .

bench-redis: services
	$(GO) run ./bench -adapter redis -n 10000

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
