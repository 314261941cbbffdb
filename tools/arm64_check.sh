#!/usr/bin/env bash
# The pre-release check for aarch64 (Raspberry Pi 4/5, Jetson) on an x86-64 Debian/Ubuntu host:
# an arm64 Debian bookworm root run under qemu-user, `pip install` of this checkout there,
# the demo, and its visits compared with the same demo on this host. Needs root (chroot,
# binfmt_misc) and network to deb.debian.org and PyPI. See docs/deploy.md, "aarch64".
#
#   sudo tools/arm64_check.sh [--cpu cortex-a72|cortex-a76] [--work DIR] [--keep]
#
# Exit 0 when both runs store the same visits (count, order, age group and gender), 1 when
# they differ, 2 when the check could not run. Confidences are printed side by side: FFmpeg
# decodes the clip slightly differently on arm, so they may move a few points.
set -euo pipefail

CPU=cortex-a72 # Pi 4; cortex-a76 for a Pi 5. Never qemu's default `max`: see below.
WORK=""
KEEP=0
while [ $# -gt 0 ]; do
	case "$1" in
	--cpu) CPU=${2:?}; shift ;;
	--work) WORK=${2:?}; shift ;;
	--keep) KEEP=1 ;;
	-h | --help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "arm64_check.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

die() {
	echo "arm64_check.sh: $*" >&2
	exit 2
}
log() { echo "arm64_check.sh: $*"; }

[ "$(id -u)" = 0 ] || die "run as root (chroot and binfmt_misc need it)"
[ "$(uname -m)" = x86_64 ] || die "this host is $(uname -m); run the demo directly instead"
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
[ -n "$WORK" ] || WORK=$(mktemp -d /tmp/kiosk-arm64.XXXXXX)
mkdir -p "$WORK"
ROOT=$WORK/root

if ! command -v mmdebstrap >/dev/null || [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
	apt-get update -q && apt-get install -y -q qemu-user-static mmdebstrap
fi
# qemu-user-static registers itself through systemd-binfmt; a container has neither that
# nor the mount, so register by hand (the F flag opens the interpreter now: no copy in the root).
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
	grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register

if [ ! -x "$ROOT/usr/bin/python3" ]; then
	log "building an arm64 bookworm root in $ROOT (a few minutes)"
	mmdebstrap --arch=arm64 --variant=apt --include=python3,python3-venv,ca-certificates \
		bookworm "$ROOT" >"$WORK/mmdebstrap.log" 2>&1 || die "mmdebstrap failed: $WORK/mmdebstrap.log"
fi
# This host's CA bundle, so that pip trusts what this host trusts (a proxy's CA included).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
rm -rf "$ROOT/src" && mkdir -p "$ROOT/src"
git -C "$SRC" ls-files -z --cached --others --exclude-standard |
	(cd "$SRC" && xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$ROOT/src"

# /proc only: LiteRT crashes when it sees the host's x86 /sys beside an x86 /proc/cpuinfo.
# QEMU_CPU: qemu's default `max` CPU advertises SME, and XNNPACK then returns nearly
# constant outputs; a real core's feature set gives the real results.
in_root() {
	unshare --mount --fork sh -c "mount -t proc proc '$ROOT/proc' && exec chroot '$ROOT' \"\$@\"" \
		sh env -i PATH=/venv/bin:/usr/bin:/bin HOME=/root QEMU_CPU="$CPU" \
		PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$@"
}
[ "$(in_root uname -m)" = aarch64 ] || die "the root does not run as aarch64 (binfmt_misc?)"

log "installing into the arm64 root (QEMU_CPU=$CPU)"
t0=$(date +%s)
in_root python3 -m venv /venv
in_root /venv/bin/pip install -q --disable-pip-version-check -c /src/constraints.txt /src \
	>"$WORK/pip-arm64.log" 2>&1 || die "pip install failed under qemu: $WORK/pip-arm64.log"
log "pip install took $(($(date +%s) - t0)) s under qemu"

log "running the demo under qemu (about a minute per 31 s of clip)"
t0=$(date +%s)
in_root sh -c 'rm -rf /tmp/arm && cd /tmp && sed "s|^state_dir: .*|state_dir: /tmp/arm|" /src/config.example.yaml >/tmp/arm.yaml &&
	kioskd --config /tmp/arm.yaml 2>/tmp/arm.log &&
	kiosk-report export --config /tmp/arm.yaml --from 1970-01-01 --to 9998-12-30' \
	>"$WORK/arm64.csv" || die "the demo failed under qemu: $ROOT/tmp/arm.log"
log "demo took $(($(date +%s) - t0)) s under qemu"

log "the same demo on this host"
X86=$WORK/x86
rm -rf "$X86" && mkdir -p "$X86"
python3 -m venv "$X86/venv"
"$X86/venv/bin/pip" install -q --disable-pip-version-check -c "$ROOT/src/constraints.txt" "$ROOT/src" \
	>"$WORK/pip-x86.log" 2>&1 || die "pip install failed on this host: $WORK/pip-x86.log"
sed "s|^state_dir: .*|state_dir: $X86/state|" "$ROOT/src/config.example.yaml" >"$X86/config.yaml"
(cd "$X86" && "$X86/venv/bin/kioskd" --config "$X86/config.yaml" 2>"$X86/kioskd.log" &&
	"$X86/venv/bin/kiosk-report" export --config "$X86/config.yaml" \
		--from 1970-01-01 --to 9998-12-30) >"$WORK/x86.csv" || die "the demo failed here: $X86/kioskd.log"

"$X86/venv/bin/python" - "$WORK/x86.csv" "$WORK/arm64.csv" <<'EOF'
import csv, sys
x86, arm = ([r for r in csv.DictReader(open(p, newline=""))] for p in sys.argv[1:3])
print(f"{'':3} {'x86-64':34} {'aarch64 (qemu)':34}")
for i in range(max(len(x86), len(arm))):
    cells = []
    for rows in (x86, arm):
        r = rows[i] if i < len(rows) else None
        cells.append(
            f"{r['gender']:6} {r['age_group']:6} gender {float(r['gender_confidence']):4.0%}"
            f" age {float(r['age_confidence']):4.0%}" if r else "-"
        )
    print(f"{i + 1:<3} {cells[0]:34} {cells[1]:34}")
key = lambda rows: [(r["age_group"], r["gender"]) for r in rows]
same = bool(x86) and key(x86) == key(arm)
print(f"arm64_check.sh: {len(x86)} visits on x86-64, {len(arm)} on aarch64: "
      + ("the same age groups and genders" if same else "DIFFERENT"))
sys.exit(0 if same else 1)
EOF
[ "$KEEP" = 1 ] || rm -rf "$WORK"
