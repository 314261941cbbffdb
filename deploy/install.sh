#!/usr/bin/env bash
# Install, upgrade or uninstall kioskd as a systemd service (Raspberry Pi OS, Jetson/JetPack,
# any systemd Linux). Safe to run again: an upgrade keeps the config, the data and the user.
# See docs/deploy.md.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: sudo deploy/install.sh [options]          install or upgrade
       sudo deploy/install.sh --uninstall [--purge]

  --prefix DIR             install everything under DIR (units then point into DIR); for tests
                           and relocated installs. Without it: /opt/kiosk, /etc/kiosk, /etc/systemd.
  --no-systemctl           do not talk to a running systemd (no daemon-reload/start/restart);
                           units are still enabled offline with `systemctl --root`.
  --python PY              interpreter for the virtual environment (default python3; needs 3.11+)
  --system-site-packages   let the venv see the system's packages (e.g. JetPack's OpenCV with
                           GStreamer from apt); pip then installs only what is missing
  --wheelhouse DIR         install from wheels in DIR only (no index; an offline install)
  --offline                no index and no build isolation: every dependency must already be
                           present (--system-site-packages or --wheelhouse)
  --extras LIST            package extras, comma-separated (default: metrics,chart; "" for none)
  --no-constraints         resolve versions afresh instead of constraints.txt's (implied by
                           --system-site-packages, whose point is the system's versions)
  --camera SOURCE          the camera for a new config (default: the first one found; see
                           `kioskd cameras`); other choices: /opt/kiosk/bin/kioskd setup --help
  --uninstall              stop and remove the service and /opt/kiosk; keeps config and data
  --purge                  with --uninstall: also delete /etc/kiosk, /var/lib/kiosk (the
                           visit database!) and the kiosk user
  -h, --help               this text
EOF
}

PREFIX=""
USE_SYSTEMCTL=1
PYTHON=python3
SYSTEM_SITE=0
WHEELHOUSE=""
OFFLINE=0
EXTRAS="metrics,chart"
CONSTRAINTS=1
CAMERA=auto
UNINSTALL=0
PURGE=0

die() {
	printf 'install.sh: error: %s\n' "$*" >&2
	exit 1
}
log() { printf 'install.sh: %s\n' "$*"; }

while [ $# -gt 0 ]; do
	case "$1" in
	--prefix) PREFIX=${2:?--prefix needs a directory}; shift ;;
	--prefix=*) PREFIX=${1#*=} ;;
	--no-systemctl) USE_SYSTEMCTL=0 ;;
	--python) PYTHON=${2:?--python needs an interpreter}; shift ;;
	--python=*) PYTHON=${1#*=} ;;
	--system-site-packages) SYSTEM_SITE=1 ;;
	--wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift ;;
	--wheelhouse=*) WHEELHOUSE=${1#*=} ;;
	--offline) OFFLINE=1 ;;
	--extras) EXTRAS=${2?--extras needs a list}; shift ;;
	--extras=*) EXTRAS=${1#*=} ;;
	--no-constraints) CONSTRAINTS=0 ;;
	--camera) CAMERA=${2:?--camera needs a source}; shift ;;
	--camera=*) CAMERA=${1#*=} ;;
	--uninstall) UNINSTALL=1 ;;
	--purge) PURGE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option: $1" ;;
	esac
	shift
done

[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge only goes with --uninstall"
if [ -n "$PREFIX" ]; then
	case "$PREFIX" in *[!A-Za-z0-9._/+-]*) die "--prefix: use only letters, digits and ._/+-" ;; esac
	mkdir -p "$PREFIX"
	PREFIX=$(cd "$PREFIX" && pwd -P)
	[ "$PREFIX" != / ] || PREFIX=""
fi
[ -n "$PREFIX" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo), or give --prefix DIR"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SRC=$(dirname "$HERE")
OPT=$PREFIX/opt/kiosk
ETC=$PREFIX/etc/kiosk
STATE=$PREFIX/var/lib/kiosk
UNITDIR=$PREFIX/etc/systemd/system
SYSUSERS=$PREFIX/etc/sysusers.d/kiosk.conf
SHARE=$OPT/share/kiosk
MANIFEST=$SHARE/installed-units
TIMEWAIT_MARK=$SHARE/enabled-time-wait-unit
TIMEWAIT_DROPIN=kiosk-bounded-wait.conf
# kiosk-report on PATH, run as the service user (tools/kiosk-report-wrapper below).
WRAPPER=$PREFIX/usr/local/bin/kiosk-report
WRAPPER_MARK="Installed by kiosk's deploy/install.sh"

have() { command -v "$1" >/dev/null 2>&1; }

# systemctl against the running manager, or offline against the files under $PREFIX.
sysctl() {
	if [ "$USE_SYSTEMCTL" = 1 ]; then
		systemctl "$@"
	elif have systemctl; then
		systemctl --root="${PREFIX:-/}" "$@"
	fi
}

# Units to enable: timers, and services that have an [Install] section and no timer.
units_to_enable() {
	local name
	for name in "$@"; do
		grep -q '^\[Install\]' "$UNITDIR/$name" || continue
		case "$name" in
		*.service) [ -e "$UNITDIR/${name%.service}.timer" ] && continue ;;
		esac
		printf '%s\n' "$name"
	done
}

install_user() {
	install -D -m 0644 "$HERE/sysusers.d/kiosk.conf" "$SYSUSERS"
	if have systemd-sysusers; then
		if [ -n "$PREFIX" ]; then
			# Creates/updates $PREFIX/etc/passwd and group; the real system is not touched.
			systemd-sysusers --root="$PREFIX" "$SYSUSERS" ||
				log "warning: could not create the kiosk user under $PREFIX"
		else
			systemd-sysusers "$SYSUSERS"
		fi
	elif [ -z "$PREFIX" ]; then
		getent group video >/dev/null || groupadd --system video
		getent group i2c >/dev/null || groupadd --system i2c
		getent passwd kiosk >/dev/null ||
			useradd --system --user-group --home-dir /var/lib/kiosk --no-create-home \
				--shell /usr/sbin/nologin --comment "kiosk store-entrance daemon" kiosk
		usermod -a -G video,i2c kiosk
	else
		log "no systemd-sysusers here: not creating the kiosk user under $PREFIX"
	fi
}

install_venv() {
	"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
		die "kiosk needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" -V 2>&1 || echo missing)" \
			"(on JetPack 6: apt install python3.11 python3.11-venv, then --python python3.11)"
	if [ -x "$OPT/bin/python" ] && ! "$OPT/bin/python" -c '' 2>/dev/null; then
		log "the virtual environment in $OPT is broken (Python upgraded?); recreating it"
		rm -rf "${OPT:?}/bin" "${OPT:?}/lib" "${OPT:?}/lib64" "${OPT:?}/include" "${OPT:?}/pyvenv.cfg"
	fi
	if [ ! -x "$OPT/bin/python" ]; then
		local venv_args=()
		[ "$SYSTEM_SITE" = 0 ] || venv_args+=(--system-site-packages)
		"$PYTHON" -m venv "${venv_args[@]}" "$OPT"
		log "created the virtual environment $OPT"
	fi
	local pip=("$OPT/bin/python" -m pip install --disable-pip-version-check --no-input
		--no-warn-script-location)
	[ "$OFFLINE" = 0 ] || pip+=(--no-index --no-build-isolation)
	[ -z "$WHEELHOUSE" ] || pip+=(--no-index --find-links "$WHEELHOUSE")
	# The versions CI tested (constraints.txt); not over the system's own packages.
	if [ "$CONSTRAINTS" = 1 ] && [ "$SYSTEM_SITE" = 0 ] && [ -e "$SRC/constraints.txt" ]; then
		pip+=(-c "$SRC/constraints.txt")
	fi
	local target="$SRC"
	[ -z "$EXTRAS" ] || target="${SRC}[$EXTRAS]"
	# A build directory inside a read-only or shared checkout is not needed: build in a temp dir.
	local build
	build=$(mktemp -d)
	cp -a "$SRC/pyproject.toml" "$SRC/kiosk" "$build/"
	[ ! -e "$SRC/README.md" ] || cp -a "$SRC/README.md" "$build/"
	find "$build" -name __pycache__ -prune -exec rm -rf {} +
	target="$build${target#"$SRC"}"
	"${pip[@]}" "$target"
	rm -rf "$build"
	log "installed $("$OPT/bin/python" -c 'import kiosk; print("kiosk", kiosk.__version__)') in $OPT"
}

install_files() {
	install -d -m 0755 "$ETC"
	if [ -e "$ETC/config.yaml" ]; then
		log "kept the existing $ETC/config.yaml"
	else
		# This door's device id, time zone and camera; the rest keeps the documented defaults.
		"$OPT/bin/kioskd" setup --yes --out "$ETC/config.yaml" --camera "$CAMERA"
		chmod 0644 "$ETC/config.yaml"
	fi
	# LoadCredential= fails the unit when its file is missing: an empty one means no password.
	local cred
	for cred in mqtt_password smtp_password; do
		[ -e "$ETC/$cred" ] || install -m 0600 /dev/null "$ETC/$cred"
	done
	install_wrapper
	install -d -m 0755 "$OPT/share/doc/kiosk" "$SHARE"
	local doc
	for doc in "$SRC"/docs/*.md; do
		[ -e "$doc" ] && install -m 0644 "$doc" "$OPT/share/doc/kiosk/"
	done
	install -m 0644 "$SRC/config.example.yaml" "$SHARE/config.example.yaml"
}

install_wrapper() {
	if [ -e "$WRAPPER" ] && ! grep -q "$WRAPPER_MARK" "$WRAPPER"; then
		log "warning: $WRAPPER is not ours; left alone (use $OPT/bin/kiosk-report)"
		return
	fi
	install -d -m 0755 "$(dirname "$WRAPPER")"
	cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# kiosk-report as the kiosk user (the database is theirs), with the installed config unless
# --config or --db is given. $WRAPPER_MARK; the command itself is $OPT/bin/kiosk-report.
set -eu
case " \$* " in
*" --config"* | *" --db"* | *" -h "* | *" --help "* | "  ") ;;
*) set -- "\$@" --config $ETC/config.yaml ;;
esac
set -- env STATE_DIRECTORY=$STATE $OPT/bin/kiosk-report "\$@"
if [ "\$(id -un)" = kiosk ] || ! id kiosk >/dev/null 2>&1; then
	exec "\$@"
elif [ "\$(id -u)" = 0 ]; then
	exec runuser -u kiosk -- "\$@"
fi
exec sudo -u kiosk -- "\$@"
EOF
	chmod 0755 "$WRAPPER.tmp"
	mv -f "$WRAPPER.tmp" "$WRAPPER"
}

install_units() {
	install -d -m 0755 "$UNITDIR"
	local unit name units=()
	for unit in "$HERE"/systemd/*.service "$HERE"/systemd/*.timer; do
		[ -e "$unit" ] || continue
		name=$(basename "$unit")
		sed -e "s|/opt/kiosk/|$OPT/|g" -e "s|/etc/kiosk/|$ETC/|g" "$unit" >"$UNITDIR/$name.tmp"
		chmod 0644 "$UNITDIR/$name.tmp"
		mv -f "$UNITDIR/$name.tmp" "$UNITDIR/$name"
		units+=("$name")
	done
	printf '%s\n' "${units[@]}" >"$MANIFEST"
	log "installed units: ${units[*]}"

	# Boards without a battery-backed clock boot with a stale time: let time-sync.target
	# wait for NTP, but at most 90 s, so a kiosk without network still starts.
	local dropin_dir="$UNITDIR/systemd-time-wait-sync.service.d"
	install -d -m 0755 "$dropin_dir"
	cat >"$dropin_dir/$TIMEWAIT_DROPIN" <<'EOF'
# Installed by kiosk's install.sh (docs/deploy.md, "Time"): kiosk.service starts after
# time-sync.target, so visits get real timestamps on boards without a real-time clock.
# Without network the wait ends after this long and kioskd starts anyway.
[Service]
TimeoutStartSec=90
EOF

	[ "$USE_SYSTEMCTL" = 1 ] || have systemctl || {
		log "no systemctl here: enable the units yourself"
		return
	}
	[ "$USE_SYSTEMCTL" = 0 ] || systemctl daemon-reload
	local enable
	mapfile -t enable < <(units_to_enable "${units[@]}")
	[ ${#enable[@]} -eq 0 ] || sysctl enable "${enable[@]}"
	if [ "$USE_SYSTEMCTL" = 1 ] && systemctl is-enabled --quiet systemd-timesyncd.service 2>/dev/null; then
		systemctl enable systemd-time-wait-sync.service
		echo systemd-time-wait-sync.service >"$TIMEWAIT_MARK"
	fi
}

check_and_restart() {
	if ! "$OPT/bin/kioskd" --check-config --config "$ETC/config.yaml"; then
		log "the installed kioskd rejects $ETC/config.yaml: fix it, then: systemctl restart kiosk"
		exit 78
	fi
	[ "$USE_SYSTEMCTL" = 1 ] || return 0
	if systemctl is-active --quiet kiosk.service; then
		systemctl restart kiosk.service
		log "restarted kiosk.service (upgrade)"
	else
		log "done. Check $ETC/config.yaml (kioskd cameras: $OPT/bin/kioskd cameras --grab SOURCE),"
		log "then: systemctl start kiosk; journalctl -fu kiosk; kiosk-report daily --date \$(date +%F)"
	fi
}

uninstall() {
	local units=()
	if [ -e "$MANIFEST" ]; then
		mapfile -t units <"$MANIFEST"
	else
		local unit
		for unit in "$HERE"/systemd/*.service "$HERE"/systemd/*.timer; do
			[ -e "$unit" ] && units+=("$(basename "$unit")")
		done
	fi
	local present=() name
	for name in "${units[@]}"; do
		[ -e "$UNITDIR/$name" ] && present+=("$name")
	done
	if [ ${#present[@]} -gt 0 ]; then
		if [ "$USE_SYSTEMCTL" = 1 ]; then
			systemctl disable --now "${present[@]}" || true
		else
			sysctl disable "${present[@]}" || true
		fi
		for name in "${present[@]}"; do rm -f "$UNITDIR/$name"; done
	fi
	if [ -e "$TIMEWAIT_MARK" ] && [ "$USE_SYSTEMCTL" = 1 ]; then
		systemctl disable "$(cat "$TIMEWAIT_MARK")" || true
	fi
	rm -f "$UNITDIR/systemd-time-wait-sync.service.d/$TIMEWAIT_DROPIN"
	rmdir "$UNITDIR/systemd-time-wait-sync.service.d" 2>/dev/null || true
	[ "$USE_SYSTEMCTL" = 0 ] || systemctl daemon-reload
	rm -rf "$OPT"
	if [ -e "$WRAPPER" ] && grep -q "$WRAPPER_MARK" "$WRAPPER"; then
		rm -f "$WRAPPER"
	fi
	log "removed the kiosk units, $OPT and $WRAPPER"
	if [ "$PURGE" = 1 ]; then
		rm -rf "$ETC" "$STATE"
		rm -f "$SYSUSERS"
		if [ -z "$PREFIX" ] && getent passwd kiosk >/dev/null; then
			userdel kiosk || log "warning: could not remove the kiosk user"
		fi
		log "purged $ETC and $STATE (config, credentials and the visit database)"
	else
		log "kept $ETC (config) and $STATE (visit database) and the kiosk user; --purge removes them"
	fi
}

if [ "$UNINSTALL" = 1 ]; then
	uninstall
	exit 0
fi
if [ ! -e "$SRC/pyproject.toml" ] || [ ! -e "$HERE/systemd/kiosk.service" ]; then
	die "run this script from a kiosk checkout (deploy/install.sh)"
fi
install_user
install_venv
install_files
install_units
check_and_restart
