#!/usr/bin/env bash
# Remove the appliance's software, its units and the /usr/local/bin/appliance link. Data,
# configuration and the master key stay unless --purge is given (then /var/lib/appliance,
# /etc/appliance and the appliance user go too: without an escrowed master key and a backup,
# nothing stored can ever be read again).
#
#   sudo installer/uninstall.sh [--purge --yes] [--prefix /opt/appliance] [--root DIR]
set -euo pipefail

PREFIX=/opt/appliance
ROOT=""
PURGE=0
YES=0

die() { echo "uninstall: $*" >&2; exit 2; }
say() { echo "==> $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX="$2"; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a value"; ROOT="$(cd "$2" && pwd)"; shift 2 ;;
    --purge) PURGE=1; shift ;;
    --yes) YES=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ] && die "run as root (sudo), or use --root DIR"
[ "$PURGE" -eq 1 ] && [ "$YES" -eq 0 ] && die "--purge destroys all data and the master key; add --yes to confirm"

UNITS="$ROOT/etc/systemd/system"
NAMES=(appliance.service appliance-worker.service appliance-maintenance.service appliance-maintenance.timer)
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
  say "stopping and disabling the units"
  systemctl disable --now "${NAMES[@]}" >/dev/null 2>&1 || true
elif [ -n "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl --root="$ROOT" disable "${NAMES[@]}" >/dev/null 2>&1 || true
fi
for unit in "${NAMES[@]}"; do
  rm -f "$UNITS/$unit"
  rm -rf "$UNITS/$unit.d"
done
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload

case "$PREFIX" in /?*) ;; *) die "--prefix must be an absolute path other than /" ;; esac
say "removing the software in $ROOT$PREFIX"
rm -rf "$ROOT$PREFIX"
# The installer's link to the command (a file of the same name that is not a link is not ours).
LINK="$ROOT/usr/local/bin/appliance"
if [ -L "$LINK" ]; then
  case "$(readlink "$LINK")" in */bin/appliance) rm -f "$LINK" ;; esac
fi

if [ "$PURGE" -eq 1 ]; then
  say "purging data, configuration and the master key"
  rm -rf "$ROOT/var/lib/appliance" "$ROOT/etc/appliance"
  [ -z "$ROOT" ] && id appliance >/dev/null 2>&1 && userdel appliance
  echo "Purged."
else
  echo "Removed the software. Kept: $ROOT/etc/appliance (config, master key) and $ROOT/var/lib/appliance (data)."
  echo "Reinstalling with installer/install.sh picks them up again; --purge removes them."
fi
