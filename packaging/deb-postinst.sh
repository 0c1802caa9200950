#!/bin/sh
# The Debian package's postinst: the system user vipmux.service runs as,
# and systemd told about the new unit. It does not enable or start the
# service: the config's [nic] must be edited first.
set -e
if [ "$1" = configure ]; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers /usr/lib/sysusers.d/vipmux.conf || true
	elif ! getent passwd vipmux >/dev/null; then
		useradd --system --home-dir /var/lib/vipmux --no-create-home --shell /usr/sbin/nologin vipmux || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
fi
exit 0
