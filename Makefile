# vipmux — build, demo, test.
#
#   make demo   build and show vipmux on a throw-away topology (root)
#   make demo-cluster   two gateways through etcd, a kill -9 and the takeover (root)
#   make test   go vet, the gVisor copy check, unit tests with -race, the
#               e2e suite (root for e2e)
#   make build  bin/vipmux, static, version stamped
#   make install / make uninstall   as a systemd service (root; DESTDIR=, PREFIX=)
#   make deb    bin/vipmux_VERSION_ARCH.deb (nfpm, a Go tool in tools/go.mod)

SHELL   := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
BIN     := bin/vipmux
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Debian packages the demo and the tests drive: ip/bridge, curl, ethtool,
# haproxy (e2e TestProxyProtocolHAProxy parses vipmux's PROXY headers),
# setpriv (e2e: serve as an unprivileged user with two capabilities),
# tcpdump (reads serve --pcap files back), patch (gvisor-check applies
# third_party/gvisor-patches), nft (e2e TestHandshakeFlood drops SYN-ACKs),
# etcd (etcd-server: the cluster's e2e tests run a real one), zsh
# (TestZshCompletion sources the completion in a real zsh).
DEB_TOOLS := ip:iproute2 curl:curl ethtool:ethtool haproxy:haproxy setpriv:util-linux tcpdump:tcpdump patch:patch nft:nftables etcd:etcd-server zsh:zsh
UNIT_PKGS := $$($(GO) list ./... | grep -v /e2e)

.PHONY: all build vipmux namesrv deps demo demo-cluster test vet gvisor-check gvisor-sync unit e2e fuzz bench bench-quick bench-deps clean install uninstall deb

all: build

# build makes bin/vipmux and the demo's test server bin/namesrv; install
# needs only the first (vipmux).
build: vipmux namesrv

vipmux:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/vipmux

namesrv:
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

# demo-cluster: gw-a and gw-b share one table through etcd (Debian's
# etcd-server, which deps installs); the holder of an IP is killed and the
# other takes it over (docs/cluster.md).
demo-cluster: deps build
	./scripts/demo-cluster.sh

vet:
	$(GO) vet ./...

# The build uses third_party/gvisor (go.mod replace): the pinned gVisor cut
# down to the packages vipmux imports, plus third_party/gvisor-patches
# (docs/gvisor-patches.md). gvisor-check fails if the copy is anything else;
# gvisor-sync regenerates it.
gvisor-check:
	GO=$(GO) ./scripts/gvisor-sync.sh --check

gvisor-sync:
	GO=$(GO) ./scripts/gvisor-sync.sh

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

e2e: deps
	$(GO) test -count=1 -timeout 15m ./e2e/

# test fuzzes every decoder briefly too (API requests, config, state file,
# state journal replay, inbound Ethernet frames into the stack);
# make fuzz FUZZTIME=10m runs them longer.
test: deps vet gvisor-check unit
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
BENCH_TOOLS := haproxy:haproxy iperf3:iperf3
bench-deps: deps build
	@missing=""; for t in $(BENCH_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/loadgen ./bench/loadgen
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/impair ./bench/impair

bench: bench-deps
	./bench/run.sh

bench-quick: bench-deps
	QUICK=1 ./bench/run.sh

clean:
	rm -rf bin build

# deb builds bin/vipmux_VERSION_ARCH.deb (DEB_DIR): the files make install lays out
# under PREFIX=/usr, packaged by nfpm (packaging/nfpm.yaml), a Go tool of
# its own module (tools/go.mod: fetched through the module proxy like any
# module, never linked into vipmux; no dpkg-dev needed). The example config
# is a conffile: dpkg keeps an operator's edits across upgrades. The version
# is the newest vN tag, else 0.0.0+git<commit>.
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed -e 's/^v//' -e 's/-/+/g'); echo $${v:-0.0.0+git$(COMMIT)})
DEB_ROOT    ?= $(CURDIR)/build/deb
DEB_DIR     ?= bin
deb: build
	rm -rf $(DEB_ROOT)
	$(MAKE) --no-print-directory install DESTDIR=$(DEB_ROOT)/root PREFIX=/usr >/dev/null
	install -m 0755 packaging/deb-postinst.sh $(DEB_ROOT)/postinst
	$(GO) build -modfile=tools/go.mod -o $(DEB_ROOT)/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm
	mkdir -p $(DEB_DIR)
	cd $(DEB_ROOT) && DEB_VERSION='$(DEB_VERSION)' DEB_ARCH=$$($(GO) env GOARCH) ./nfpm package \
		--config $(CURDIR)/packaging/nfpm.yaml --packager deb --target $(abspath $(DEB_DIR))/

# install puts vipmux where a daemon lives: the binary, the systemd unit
# (user vipmux, CAP_NET_RAW and CAP_NET_ADMIN only), its sysusers.d entry,
# the config (only if there is none: an operator's config is never
# replaced; the example is always in $(DOCDIR)), the man page and bash, zsh
# and fish completion. With DESTDIR (packaging) it only copies files;
# without, it also creates the user and reloads systemd.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
DATADIR     ?= $(PREFIX)/share
MANDIR      ?= $(DATADIR)/man
DOCDIR      ?= $(DATADIR)/doc/vipmux
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR  ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
INSTALLED   := $(BINDIR)/vipmux $(UNITDIR)/vipmux.service $(SYSUSERSDIR)/vipmux.conf \
	$(MANDIR)/man8/vipmux.8 $(MANDIR)/man5/vipmux.toml.5 $(DOCDIR)/config.example.toml \
	$(BASHCOMPDIR)/vipmux $(ZSHCOMPDIR)/_vipmux $(FISHCOMPDIR)/vipmux.fish

install: vipmux
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) \
		$(DESTDIR)$(SYSCONFDIR)/vipmux
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/vipmux
	sed -e 's|/usr/local/bin/vipmux|$(BINDIR)/vipmux|' -e 's|/etc/vipmux/|$(SYSCONFDIR)/vipmux/|' \
		packaging/vipmux.service > $(DESTDIR)$(UNITDIR)/vipmux.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/vipmux.service
	install -m 0644 packaging/vipmux.sysusers $(DESTDIR)$(SYSUSERSDIR)/vipmux.conf
	install -m 0644 config.example.toml $(DESTDIR)$(DOCDIR)/config.example.toml
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/vipmux/vipmux.toml ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/vipmux/vipmux.toml (the example is $(DOCDIR)/config.example.toml)"; \
	else \
		install -m 0644 config.example.toml $(DESTDIR)$(SYSCONFDIR)/vipmux/vipmux.toml; \
		echo "installed $(DESTDIR)$(SYSCONFDIR)/vipmux/vipmux.toml: edit [nic] before starting vipmux"; \
	fi
	$(BIN) man > $(DESTDIR)$(MANDIR)/man8/vipmux.8
	$(BIN) man --section 5 > $(DESTDIR)$(MANDIR)/man5/vipmux.toml.5
	$(BIN) completion bash > $(DESTDIR)$(BASHCOMPDIR)/vipmux
	$(BIN) completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_vipmux
	$(BIN) completion fish > $(DESTDIR)$(FISHCOMPDIR)/vipmux.fish
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/vipmux.8 $(DESTDIR)$(MANDIR)/man5/vipmux.toml.5 $(DESTDIR)$(BASHCOMPDIR)/vipmux $(DESTDIR)$(ZSHCOMPDIR)/_vipmux $(DESTDIR)$(FISHCOMPDIR)/vipmux.fish
	@if [ -z "$(DESTDIR)" ]; then \
		if command -v systemd-sysusers >/dev/null; then systemd-sysusers $(SYSUSERSDIR)/vipmux.conf; \
		elif ! id vipmux >/dev/null 2>&1; then useradd --system --home-dir /var/lib/vipmux --no-create-home --shell /usr/sbin/nologin vipmux; fi; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		echo "next: edit $(SYSCONFDIR)/vipmux/vipmux.toml, then: systemctl enable --now vipmux"; \
	fi

# uninstall removes what install put there, except the config and the
# state (the table) in /var/lib/vipmux, and the user: an operator's data.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now vipmux.service 2>/dev/null || true; fi
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	@rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/vipmux (config), /var/lib/vipmux (state) and the user vipmux; remove them by hand if you wish"
