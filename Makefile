# vipmux — build, demo, test.
#
#   make demo   build and show vipmux on a throw-away topology (root)
#   make test   go vet, unit tests with -race, the e2e suite (root for e2e)
#   make build  bin/vipmux, static, version stamped

SHELL   := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin/vipmux
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Debian packages the demo and the tests drive: ip/bridge, curl, ethtool,
# tcpdump (reads serve --pcap files back).
DEB_TOOLS := ip:iproute2 curl:curl ethtool:ethtool tcpdump:tcpdump
UNIT_PKGS := $$($(GO) list ./... | grep -v /e2e)

.PHONY: all build deps demo test vet unit e2e fuzz bench bench-quick bench-deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/vipmux
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/namesrv ./e2e/namesrv

# deps installs the Debian tools that are missing (root), and fetches Go
# modules through the module proxy.
deps:
	@missing=""; for t in $(DEB_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(GO) >/dev/null || { echo "Go is needed (go1.26 or later at /usr/local/go)"; exit 1; }
	$(GO) mod download

demo: deps build
	./scripts/demo.sh

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

e2e: deps
	$(GO) test -count=1 -timeout 15m ./e2e/

# test fuzzes every decoder briefly too (API requests, config, state file);
# make fuzz FUZZTIME=10m runs them longer.
test: deps vet unit
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)
	$(MAKE) --no-print-directory e2e

# fuzz runs each fuzz target for FUZZTIME (make fuzz FUZZTIME=10m for a long run).
# make test bounds fuzzing by executions, not time: a duration limit can end
# in a spurious "context deadline exceeded" on a loaded machine (Go issue
# 75804, fixed only in Go 1.27).
FUZZTIME ?= 15s
TEST_FUZZTIME ?= 5000x
fuzz:
	@for p in $$($(GO) list ./... | grep -v /e2e); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
			echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
		done; \
	done

# bench measures vipmux next to HAProxy and the kernel in one run (root);
# bench-quick is the short version for development.
BENCH_TOOLS := haproxy:haproxy iperf3:iperf3 arping:iputils-arping
bench-deps: deps build
	@missing=""; for t in $(BENCH_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/loadgen ./bench/loadgen

bench: bench-deps
	./bench/run.sh

bench-quick: bench-deps
	QUICK=1 ./bench/run.sh

clean:
	rm -rf bin
