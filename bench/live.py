"""Starting a real `appliance serve` for a benchmark: a free loopback port, and waiting
until the server answers /readyz (default models loaded) or has died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Returns once ``base``/readyz answers 200; raises RuntimeError with the log's tail
    when the process exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the appliance did not become ready:\n" + log.read_text()[-4000:])
        time.sleep(0.25)


CLI = [sys.executable, "-m", "appliance.cli"]


def appliance_env(tmp: Path, store: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any APPLIANCE_ setting of its own, pointed at a
    fresh data directory and config in ``tmp``, the model store ``store``, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(tmp / "data"),
        APPLIANCE_CONFIG=str(tmp / "appliance.toml"),
        APPLIANCE_MODELS__STORE_DIR=str(store.resolve()),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="",
        **settings,
    )
    (tmp / "appliance.toml").write_text("")
    return env


def run_cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> str:
    """``appliance ARGS`` in a subprocess; its stdout, or RuntimeError with both streams."""
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"appliance {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout
