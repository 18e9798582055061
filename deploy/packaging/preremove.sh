#!/bin/sh
# reflector package: before removal (deb: remove; rpm: 0). Not on upgrade
# (deb: upgrade; rpm: 1), where postinstall restarts the running service.
set -e

case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl disable --now reflector.service >/dev/null 2>&1 || :
	fi
	;;
esac
exit 0
