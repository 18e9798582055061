# PacketParamedic Reflector build targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
PKG       := github.com/packetparamedic/reflector
LDFLAGS   := -s -w -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
BIN       := bin/reflector
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME  ?= 10s

.PHONY: all build run test test-short lint fuzz bench bench-compare clean

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

## test-short: quick run without the race detector and without long interop cases.
test-short:
	$(GO) test -short -count=1 ./...

## lint: gofmt, go vet, staticcheck.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## fuzz: a short bounded run of every fuzz target (FUZZTIME each).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: go test benchmarks in bench/.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./bench/...

## bench-compare: stock iperf3 client against stock iperf3 -s and our server, side by side.
bench-compare: build
	$(GO) run ./bench/cmd/compare -reflector $(BIN)

clean:
	rm -rf bin
