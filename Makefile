# PacketParamedic Reflector build targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
PKG       := github.com/packetparamedic/reflector
LDFLAGS   := -s -w -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
BIN       := bin/reflector
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME  ?= 10s

.PHONY: all build run test test-short stress lint fuzz bench bench-compare clean

all: build

## build: static, trimmed binary with version and commit stamped in.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/reflector

## run: start the server with the embedded defaults (or $$REFLECTOR_CONFIG).
run:
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/reflector serve

## test: the full suite with the race detector (what CI runs).
test:
	$(GO) test -race -count=1 -timeout 20m ./...

## stress: the heavy hardening tests (floods, 1,000 idle peers, SIGKILL, full
## disk, 200 sessions); no race detector, which would distort the load.
stress:
	$(GO) test -tags stress -count=1 -timeout 15m -v ./stress/...

## test-short: quick run without the race detector; -short skips every test
## that starts an external program (testutil.LookBinary: stock iperf3, openssl,
## promtool, buildah, rpm, dpkg), the built binary (testutil.ReflectorBinary)
## or network namespaces, and the timed cases of the iperf3 client matrix.
test-short:
	$(GO) test -short -count=1 ./...

## lint: gofmt, go.mod/go.sum tidy, go vet (also the stress-tagged files and
## GOOS=darwin), staticcheck (with the stress tag: no file is !stress, so
## that covers every file).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) vet -tags stress ./...
	GOOS=darwin $(GO) vet -tags stress ./...
	$(GO) run $(STATICCHECK) -tags stress ./...

## fuzz: a short bounded run of every fuzz target (FUZZTIME each). Go 1.26's
## fuzz coordinator can end a clean run with a bare "context deadline exceeded"
## at the FUZZTIME boundary (golang/go#75804, fixed in Go 1.27): that alone,
## with no failing input written, is reported and not counted as a failure.
fuzz:
	@fails=0; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; \
	    if out=$$($(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); then \
	      echo "$$out" | tail -n 3; \
	    elif echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
	      echo "$$out" | tail -n 4; echo "   (go#75804 deadline race at the end of the run, no failing input: not a finding)"; \
	    else \
	      echo "$$out"; fails=$$((fails+1)); \
	    fi; \
	  done; \
	done; \
	if [ $$fails -ne 0 ]; then echo "fuzz: $$fails target(s) failed"; exit 1; fi

## bench: go test benchmarks in bench/.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./bench/...

## bench-compare: stock iperf3 client against stock iperf3 -s and our server, side by side.
bench-compare: build
	$(GO) run ./bench/cmd/compare -reflector $(BIN)

## bench-compare-gsro: the --gsro UDP cases with an upstream iperf3 (3.20+)
## client against its own server and ours (.ci/iperf3-upstream.sh installs
## iperf3-upstream from Debian sid's packages).
.PHONY: bench-compare-gsro
bench-compare-gsro: build
	$(GO) run ./bench/cmd/compare -reflector $(BIN) -iperf3 iperf3-upstream \
	  -cases '-u --gsro -b 0 -l 1400,-u -R --gsro -b 0 -l 1400'

## echo-compare: UDP echo RTT p50/p99 on loopback, `reflector test udp-echo`
## against our server vs `sockperf ping-pong` against `sockperf server`
## (needs sockperf: apt-get install -y sockperf; installs nothing).
.PHONY: echo-compare
echo-compare: build
	$(GO) run ./bench/cmd/echocompare -reflector $(BIN)

clean:
	rm -rf bin

## Packages and images (deploy/). PKG_VERSION must start with a digit (deb, rpm).
NFPM        := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# Untagged builds: 0.0.0~git<commit count>.<sha>, so they sort in commit order
# (deploy/packaging/pkg-version.sh; checked with dpkg and rpm in deploy/).
GIT_COUNT   ?= $(shell git rev-list --count HEAD 2>/dev/null || echo 0)
PKG_VERSION ?= $(shell sh deploy/packaging/pkg-version.sh '$(VERSION)' '$(GIT_COUNT)')
GOARCH      ?= $(shell $(GO) env GOARCH)
IMAGE       ?= localhost/reflector
# Plain buildah uses containers-storage (/var/lib/containers/storage, or
# ~/.local/share/containers rootless), the store Podman reads: the image is
# then runnable by name (podman run localhost/reflector). Where only vfs
# works: make container-local BUILDAH='buildah --storage-driver vfs'.
BUILDAH     ?= buildah

.PHONY: deb rpm packages container container-local

## deb, rpm: bin/reflector_<version>_<arch>.deb / .rpm from deploy/nfpm.yaml.
deb rpm: build
	PKG_VERSION='$(PKG_VERSION)' GOARCH='$(GOARCH)' $(GO) run $(NFPM) pkg --config deploy/nfpm.yaml --packager $@ --target bin/

packages: deb rpm

## container: the multi-stage Containerfile (needs the golang:1.26 image).
container:
	$(BUILDAH) bud --format docker --build-arg VERSION='$(VERSION)' --build-arg COMMIT='$(COMMIT)' \
	  -f Containerfile -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

## container-local: same final stage around a binary built here (no registry).
container-local: build
	mkdir -p bin/state && mkdir -p -m 0700 bin/state/reflector
	$(BUILDAH) bud --format docker --build-arg VERSION='$(VERSION)' --build-arg COMMIT='$(COMMIT)' \
	  -f deploy/container/Containerfile.local -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

## image-archive: the image as a docker-archive with its name and HEALTHCHECK,
## for hosts without a registry: podman load -i / docker load -i bin/reflector-image.tar
.PHONY: image-archive
image-archive:
	$(BUILDAH) push $(IMAGE):latest docker-archive:bin/reflector-image.tar:$(IMAGE):latest
