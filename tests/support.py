"""Test helpers: real databases (SQLite file, PostgreSQL server), a real uvicorn server,
and factories for tenants and keys. No mocks."""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import uvicorn
from sqlalchemy import text

from appliance.api.app import create_asgi
from appliance.config import PrivacySettings, Settings
from appliance.crypto.keyring import MasterKeyring, new_key
from appliance.db import migrate
from appliance.models.base import InputObserver, ModelInput
from appliance.roles import Role
from appliance.services.container import Services, build_services
from appliance.services.principal import Principal

if TYPE_CHECKING:
    from appliance.privacy.detection import Detector

PG_ADMIN_URL = os.environ.get("APPLIANCE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the duration of the block; dropped after."""
    name = f"appliance_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def walled_postgres() -> Iterator[tuple[str, str, str]]:
    """A fresh PostgreSQL database, migrated by its owner, with row-level security on, and a
    role made for the application that owns nothing and cannot bypass RLS.
    -> (the application's URL, the owner's URL, the role); both dropped afterwards."""
    from appliance.db.engine import make_engine
    from appliance.services.schema import DatabaseSchema

    role = f"appliance_app_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE')
    try:
        with postgres_database() as owner_url:
            owner = make_engine(owner_url)
            try:
                migrate.upgrade(owner)
                DatabaseSchema(owner).enable_row_level_security(role)  # what `appliance db enable-rls` runs
            finally:
                owner.dispose()
            yield owner_url.replace("//postgres@", f"//{role}@", 1), owner_url, role
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'appliance.db'}"
    elif backend == "postgres-rls":
        with walled_postgres() as (app_url, _, _):
            yield app_url
    else:
        with postgres_database() as url:
            yield url


MODEL_STORE = Path(
    os.environ.get(
        "APPLIANCE_TEST_MODEL_STORE", Path(__file__).parent.parent / ".pytest_cache" / "appliance-model-store"
    )
)
"""Shared by every test process so SmolLM2 is converted from its GGUF once per checkout."""


def make_settings(data_dir: Path, db_url: str, *, models: dict[str, Any] | None = None, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        dev_mode=True,
        database={"url": db_url},  # type: ignore[arg-type]
        keys={"dev_master_key": base64.b64encode(new_key()).decode()},  # type: ignore[arg-type]
        models={"store_dir": MODEL_STORE, **(models or {})},  # type: ignore[arg-type]
        **extra,
    )


@functools.cache
def shared_detector() -> Detector:
    """One NER pipeline per test process (loading takes seconds)."""
    from appliance.privacy.detection import Detector

    return Detector(PrivacySettings())  # type: ignore[call-arg]


def make_services(settings: Settings, *, model_observer: InputObserver | None = None) -> Services:
    services = build_services(
        settings,
        keyring=MasterKeyring(base64.b64decode(settings.keys.dev_master_key or "")),
        model_observer=model_observer,
        detector=shared_detector(),
    )
    migrate.upgrade(services.engine)
    return services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(services: Services) -> Iterator[str]:
    """uvicorn serving the real app on a loopback port in a background thread."""
    port = free_port()
    asgi = create_asgi(services)
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Stack:
    """A migrated database, its services, a live server and an operator key."""

    services: Services
    base_url: str
    operator_key: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self.clients.append(c)
        return c

    def tenant(self, prefix: str = "t") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.services.tenants.create(Principal.local_operator(), name)
        return name

    def key(self, role: Role, tenant: str | None = None) -> str:
        return self.services.api_keys.create(Principal.local_operator(), role=role, name="test", tenant=tenant).api_key

    def close(self) -> None:
        for c in self.clients:
            c.close()


def list_every(client: httpx.Client, path: str, **params: str | int) -> list[dict[str, Any]]:
    """Every item of a paged listing (``items`` + ``next_cursor``), following the cursors."""
    items: list[dict[str, Any]] = []
    query: dict[str, str | int] = {"limit": 500, **params}
    while True:
        r = client.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        query["cursor"] = body["next_cursor"]


class SeenInputs:
    """A model observer that records what each model was handed (thread-safe)."""

    def __init__(self) -> None:
        self.inputs: list[ModelInput] = []
        self.lock = threading.Lock()

    def __call__(self, item: ModelInput) -> None:
        with self.lock:
            self.inputs.append(item)

    def since(self, n: int) -> list[ModelInput]:
        with self.lock:
            return self.inputs[n:]

    def text(self) -> str:
        with self.lock:
            return "\n".join(t for i in self.inputs for t in i.texts)


def renamed_audit_table(services: Services) -> Callable[[], None]:
    """Make audit writes fail for real: the table is renamed away; returns the undo."""
    with services.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_away"))

    def undo() -> None:
        with services.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_entries_away RENAME TO audit_entries"))

    return undo


@contextmanager
def live_stack(services: Services) -> Iterator[Stack]:
    """``services`` served on loopback with an operator key; closes both afterwards."""
    try:
        with running_server(services) as base_url:
            operator_key = services.api_keys.create(Principal.local_operator(), role=Role.OPERATOR, name="op").api_key
            stack = Stack(services, base_url, operator_key)
            try:
                yield stack
            finally:
                stack.close()
    finally:
        services.close()


@dataclass
class ServedProcess:
    """A separate `appliance serve` process initialised with a demo tenant."""

    base_url: str
    init: dict[str, Any]
    data_dir: Path
    log: Path
    pid: int


@contextmanager
def appliance_process(
    tmp: Path, *, ready_within_s: float = 90, warmup: bool = False, config: Path | None = None
) -> Iterator[ServedProcess]:
    """README command 1's flow as a real process on loopback: `init --demo-tenant demo`, then
    `serve` (with `--no-warmup` unless ``warmup``, which loads the default models before
    listening, as `serve-demo` does); yields once `/readyz` answers, stops the process afterwards.
    ``config`` is the settings file (`serve-demo` uses ``scripts/dev.toml``); default: an empty
    one, so JSON logs. The port is always a free one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    if config is None:
        config = tmp / "a.toml"
        config.write_text("")
    env.update(
        APPLIANCE_DATA_DIR=str(tmp / "data"),
        APPLIANCE_CONFIG=str(config),
        APPLIANCE_MODELS__STORE_DIR=str(MODEL_STORE),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    cli = [sys.executable, "-m", "appliance.cli"]
    init = subprocess.run(
        [*cli, "init", "--demo-tenant", "demo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        raise RuntimeError("appliance init failed:\n" + init.stderr)
    port = free_port()
    log = tmp / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*cli, "serve", "--port", str(port), *([] if warmup else ["--no-warmup"])],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("appliance did not become ready:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        yield ServedProcess(base, json.loads(init.stdout), tmp / "data", log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
