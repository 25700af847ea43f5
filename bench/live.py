"""Starting a real `appliance serve` for a benchmark: a free loopback port, and waiting
until the server answers /readyz (default models loaded) or has died."""

from __future__ import annotations

import socket
import subprocess
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
