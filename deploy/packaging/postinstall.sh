#!/bin/sh
# reflector package: after install or upgrade (deb: configure; rpm: 1 or 2).
set -e

if ! getent group reflector >/dev/null 2>&1; then
	groupadd --system reflector
fi
if ! getent passwd reflector >/dev/null 2>&1; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid reflector --home-dir /var/lib/reflector --no-create-home \
		--shell "$nologin" --comment "PacketParamedic reflector" reflector
fi
# State: key, audit log, peers, quotas, admin socket. Owned by the service
# user, not readable by others. (systemd's StateDirectory= would also create
# it, but `reflector` run by hand as this user needs it too.)
install -d -m 0750 -o reflector -g reflector /var/lib/reflector
# Files already there (a key made by `sudo reflector show-id` before the
# install, an upgrade from a build that ran as root) must be the service
# user's, or it cannot read its own identity. Regular files only, no
# symlinks followed; modes stay as they are (the key is 0600).
find /var/lib/reflector -xdev \( -type f -o -type d \) ! -user reflector \
	-exec chown -h reflector:reflector {} + 2>/dev/null || :

# UDP buffer ceilings for QUIC and the echo (/usr/lib/sysctl.d/60-reflector.conf).
if command -v sysctl >/dev/null 2>&1; then
	sysctl -q -p /usr/lib/sysctl.d/60-reflector.conf >/dev/null 2>&1 || :
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	# Restart on upgrade only if it was running; a fresh install is left
	# stopped until the operator has set authorized_peers or pairing.
	if systemctl is-active --quiet reflector.service; then
		systemctl try-restart reflector.service || :
	fi
fi
exit 0
