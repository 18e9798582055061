#!/usr/bin/env bash
# Build Podman's Quadlet generator for the deploy tests (TestQuadletGenerates):
# Debian bookworm's Podman 4.3 has no Quadlet, and deploy/quadlet needs
# Podman >= 4.7. Only the generator is built (pure Go, from the podman Go
# module at a fixed version, in a temporary module: the repository's go.mod
# is untouched). The result is $BIN_DIR/quadlet.
#
#   .ci/quadlet.sh [VERSION]   (default v4.9.5, the last 4.x)
set -euo pipefail

version=${1:-v4.9.5}
bin_dir=${BIN_DIR:-/usr/local/bin}
major=${version%%.*}
mod=github.com/containers/podman
[ "$major" = v4 ] || [ "$major" = v5 ] && mod=$mod/$major

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
go mod init quadlet-build >/dev/null 2>&1
GOFLAGS=-mod=mod go get "$mod@$version"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$bin_dir/quadlet" "$mod/cmd/quadlet"
"$bin_dir/quadlet" -version
