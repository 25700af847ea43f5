"""The offline bundle's supply chain on a small wheel set: ``installer/bundle_lock.py`` (what
build-bundle.sh runs) pins every wheel by digest in a lock pip installs with
``--require-hashes``, writes a CycloneDX SBOM of exactly that set, and its ``check`` finds any
wheel, pin or SBOM entry that disagrees. Real pip and real cyclonedx-py; no network.

(test_installer.py builds the full 560 MB bundle and checks the same files on it.)
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "installer" / "bundle_lock.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bundle_lock", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle_lock = _load()


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid pure-Python wheel (what pip installs), built with zipfile."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def record(path: str, body: str) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(body.encode())}"

    files[f"{dist}/RECORD"] = "\n".join([*(record(p, b) for p, b in files.items()), f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, body in files.items():
            z.writestr(path, body)
    return wheel


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle's wheel folders (an app with two dependencies, and a model package), locked
    and with its SBOM; built once (cyclonedx-py takes seconds to start)."""
    b = tmp_path_factory.mktemp("bundle") / "appliance-bundle-0"
    (b / "wheels").mkdir(parents=True)
    (b / "models").mkdir()
    make_wheel(b / "wheels", "tiny_app", "1.0", requires=("tiny-dep>=2", "Other.Dep"))
    make_wheel(b / "wheels", "tiny_dep", "2.1")
    make_wheel(b / "wheels", "other_dep", "0.3")
    make_wheel(b / "models", "tiny_model", "0.1.2")
    bundle_lock.write_locks(b)
    bundle_lock.write_sbom(b, str(Path(sys.executable).with_name("cyclonedx-py")))
    return b


@pytest.fixture
def bundle(built: Path, tmp_path: Path) -> Path:
    """A copy of the built bundle each test may damage."""
    return Path(shutil.copytree(built, tmp_path / built.name))


def _pip_dry_run(bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--dry-run"),
            *("--ignore-installed", "--no-index", "--only-binary=:all:", "--require-hashes"),
            *("--find-links", str(bundle / "wheels"), "-r", str(bundle / "requirements.lock")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_lock_pins_every_wheel_by_digest_and_pip_installs_it_with_require_hashes(bundle: Path) -> None:
    lines = (bundle / "requirements.lock").read_text().splitlines()
    assert lines[0].startswith("#")
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    expected = [
        f"{bundle_lock.normalize(w.name.split('-')[0])}=={w.name.split('-')[1]} "
        f"--hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}"
        for w in wheels
    ]
    assert sorted(lines[1:]) == sorted(expected)
    assert "tiny-model==0.1.2 --hash=sha256:" in (bundle / "models.lock").read_text()
    done = _pip_dry_run(bundle)
    assert done.returncode == 0, done.stderr
    assert "Would install" in done.stdout and "tiny-app-1.0" in done.stdout.replace("_", "-"), done.stdout


def test_a_swapped_wheel_is_refused_by_pip_and_named_by_the_check(bundle: Path) -> None:
    swapped = bundle / "wheels" / "tiny_dep-2.1-py3-none-any.whl"
    swapped.unlink()
    make_wheel(bundle / "wheels", "tiny_dep", "2.1", requires=("evil",))  # same name, other bytes
    done = _pip_dry_run(bundle)
    assert done.returncode != 0
    assert "DO NOT MATCH THE HASHES" in done.stderr.upper()
    assert bundle_lock.check(bundle) == ["wheels/: tiny-dep 2.1 does not match its pin in requirements.lock"]


def test_the_sbom_is_cyclonedx_and_names_exactly_the_pinned_wheels_with_their_digests(bundle: Path) -> None:
    doc = json.loads((bundle / "sbom.cdx.json").read_text())
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"] in ("1.6", "1.7")
    components = bundle_lock.sbom_components(bundle / "sbom.cdx.json")
    pinned = bundle_lock.read_lock(bundle / "requirements.lock") | bundle_lock.read_lock(bundle / "models.lock")
    assert components == {name: (v, d) for name, (v, d) in pinned.items()}
    assert {c["purl"] for c in doc["components"]} >= {"pkg:pypi/tiny-app@1.0", "pkg:pypi/tiny-model@0.1.2"}
    assert bundle_lock.check(bundle) == []


def test_the_check_names_an_unpinned_wheel_a_pin_without_a_wheel_and_a_stale_sbom(bundle: Path) -> None:
    make_wheel(bundle / "wheels", "stowaway", "9.9")
    (bundle / "models" / "tiny_model-0.1.2-py3-none-any.whl").unlink()
    problems = bundle_lock.check(bundle)
    assert "wheels/: stowaway 9.9 is in the bundle but not pinned in requirements.lock" in problems
    assert "models.lock: tiny-model is pinned but its wheel is not in models/" in problems
    bundle_lock.write_locks(bundle)  # re-locked, but the SBOM was not regenerated
    assert bundle_lock.check(bundle) == [
        "sbom.cdx.json: stowaway 9.9 is pinned but not in the SBOM",
        "sbom.cdx.json: tiny-model is in the SBOM but not in the bundle",
    ]
    done = subprocess.run([sys.executable, str(SCRIPT), "check", str(bundle)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "bundle check: sbom.cdx.json: stowaway 9.9" in done.stderr
