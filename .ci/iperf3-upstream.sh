#!/usr/bin/env bash
# Install an upstream iperf3 (3.20 or later, with --gsro) beside Debian's
# 3.12 for the interop tests and bench-compare, from Debian packages only:
# sid's iperf3 and libiperf0 need a newer glibc than bookworm's, so sid's
# libc6 is unpacked with them and the binary runs under that libc's own
# loader. Nothing is installed with dpkg and the system's apt sources are
# untouched: the sid source lives in a temporary directory that is removed
# afterwards. The result is the command iperf3-upstream in $BIN_DIR.
#
#   .ci/iperf3-upstream.sh [PREFIX]   (default /opt/iperf3-upstream)
set -euo pipefail

prefix=${1:-/opt/iperf3-upstream}
bin_dir=${BIN_DIR:-/usr/local/bin}
suite=${IPERF3_UPSTREAM_SUITE:-sid}

case "$(dpkg --print-architecture)" in
  amd64) triplet=x86_64-linux-gnu;  loader=ld-linux-x86-64.so.2 ;;
  arm64) triplet=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1 ;;
  *) echo "iperf3-upstream: unsupported architecture $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/dl"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$tmp/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$tmp/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=)
apt-get "${apt_opts[@]}" update -qq
(cd "$tmp/dl" && apt-get "${apt_opts[@]}" download iperf3 libiperf0 libc6)

rm -rf "$prefix"
mkdir -p "$prefix/root"
for deb in "$tmp"/dl/*.deb; do
  dpkg-deb -x "$deb" "$prefix/root"
done
lib="$prefix/root/usr/lib/$triplet"
cat >"$bin_dir/iperf3-upstream" <<WRAP
#!/bin/sh
# iperf3 from Debian $suite under its own glibc (see .ci/iperf3-upstream.sh).
exec "$lib/$loader" --library-path "$lib:/lib/$triplet:/usr/lib/$triplet" "$prefix/root/usr/bin/iperf3" "\$@"
WRAP
chmod 0755 "$bin_dir/iperf3-upstream"

version=$("$bin_dir/iperf3-upstream" --version | head -n 1)
echo "iperf3-upstream: $version"
minor=$(echo "$version" | sed -n 's/^iperf 3\.\([0-9]*\).*/\1/p')
if [ -z "$minor" ] || [ "$minor" -lt 20 ]; then
  echo "iperf3-upstream: need iperf3 3.20 or later, got: $version" >&2
  exit 1
fi
"$bin_dir/iperf3-upstream" --help | grep -q -- --gsro || { echo "iperf3-upstream: no --gsro" >&2; exit 1; }
