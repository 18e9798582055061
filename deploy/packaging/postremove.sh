#!/bin/sh
# reflector package: after removal. `dpkg --purge` also deletes the state
# (identity key, audit log, peers, quotas) and the reflector user, after
# copying the identity key to /var/backups/reflector/ (a new key is a new
# Endpoint ID that every appliance would have to pair with again);
# `rpm -e` and `dpkg -r` keep both, so a reinstall keeps its Endpoint ID.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" = "purge" ]; then
	backup=/var/backups/reflector
	for key in /var/lib/reflector/identity.ed25519 /var/lib/reflector/identity.ed25519.*.bak /var/lib/reflector/identity.key; do
		[ -f "$key" ] || continue
		install -d -m 0700 -o root -g root "$backup"
		dst="$backup/$(basename "$key").$(date -u +%Y%m%dT%H%M%SZ)"
		install -m 0600 -o root -g root "$key" "$dst"
		echo "reflector: identity key kept in $dst (restore it to /var/lib/reflector/identity.ed25519 to keep the Endpoint ID)"
	done
	rm -rf /var/lib/reflector
	if getent passwd reflector >/dev/null 2>&1; then
		userdel reflector
	fi
	if getent group reflector >/dev/null 2>&1; then
		groupdel reflector
	fi
fi
exit 0
