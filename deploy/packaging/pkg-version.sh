#!/bin/sh
# Prints the deb/rpm package version for a build:
#   pkg-version.sh DESCRIBE COUNT
# DESCRIBE is `git describe --tags --always --dirty`, COUNT is
# `git rev-list --count HEAD`. Versions sort in commit order with both
# dpkg --compare-versions and rpm's vercmp (deploy/packages_test.go):
#   v1.2.0                -> 1.2.0
#   v1.2.0-5-gabc1234     -> 1.2.0+git5.abc1234   (after 1.2.0, before 1.2.1)
#   v1.2.0-rc1            -> 1.2.0~rc1            (before 1.2.0)
#   abc1234 (no tag)      -> 0.0.0~git171.abc1234 (before any release;
#                            the commit count orders untagged builds)
# A -dirty suffix becomes .dirty (same commit, local changes).
set -eu
describe=${1:?usage: pkg-version.sh DESCRIBE COUNT}
count=${2:?usage: pkg-version.sh DESCRIBE COUNT}
case $count in '' | *[!0-9]*) echo "pkg-version.sh: COUNT '$count' is not a number" >&2; exit 2 ;; esac
dirty=
case $describe in *-dirty) dirty=.dirty; describe=${describe%-dirty} ;; esac
release=$(printf '%s\n' "$describe" | sed -n 's/^v\{0,1\}\([0-9][0-9]*\(\.[0-9][0-9]*\)*\)\(-\([0-9][0-9]*\)-g\([0-9a-f][0-9a-f]*\)\)\{0,1\}$/\1 \4 \5/p')
pre=$(printf '%s\n' "$describe" | sed -n 's/^v\{0,1\}\([0-9][0-9]*\(\.[0-9][0-9]*\)*\)-\([a-z][a-z]*[0-9]*\)$/\1~\3/p')
if [ -n "$pre" ]; then
	echo "$pre$dirty"
elif [ -n "$release" ]; then
	set -- $release
	if [ $# -eq 3 ]; then
		echo "$1+git$2.$3$dirty"
	else
		echo "$1${dirty:++git0$dirty}"
	fi
else
	sha=$(printf '%s\n' "$describe" | tr -cd '0-9a-f' | cut -c1-12)
	echo "0.0.0~git$count.${sha:-unknown}$dirty"
fi
