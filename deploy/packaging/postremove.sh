#!/bin/sh
# reflector package: after removal. `dpkg --purge` also deletes the state
# (identity key, audit log, peers, quotas) and the reflector user; `rpm -e`
# and `dpkg -r` keep both, so a reinstall keeps its Endpoint ID.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" = "purge" ]; then
	rm -rf /var/lib/reflector
	if getent passwd reflector >/dev/null 2>&1; then
		userdel reflector
	fi
	if getent group reflector >/dev/null 2>&1; then
		groupdel reflector
	fi
fi
exit 0
