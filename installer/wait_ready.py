"""Wait until the installed appliance answers 200 on /readyz; install.sh runs it after a start.

    APPLIANCE_CONFIG=/etc/appliance/appliance.toml /opt/appliance/venv/bin/python wait_ready.py SECONDS

It polls the address the server binds (``server.host``, ``server.port`` from the configuration),
so a node bound to its own address (several API nodes behind a load balancer) is reached there;
the wildcard addresses are reached through loopback (0.0.0.0 -> 127.0.0.1, :: -> ::1). Exit
status 0 once ready, 1 when SECONDS pass first, 2 on a bad argument.
"""

from __future__ import annotations

import sys
import time
import urllib.request

# Bind addresses meaning "every interface", and the loopback address that reaches them.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}  # noqa: S104 - read, not bound


def readyz_url(host: str, port: int) -> str:
    """Where a client on this host reaches a server bound to ``host``:``port``."""
    host = _WILDCARDS.get(host.strip(), host.strip())
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}/readyz"


def wait(url: str, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - always http://, built above
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: wait_ready.py SECONDS", file=sys.stderr)
        return 2
    from appliance.config import load_settings  # the installed appliance's own reading of the config

    server = load_settings().server
    url = readyz_url(server.host, server.port)
    print(f"==> waiting up to {argv[0]}s for {url} (the first start converts SmolLM2)", file=sys.stderr)
    return 0 if wait(url, float(argv[0])) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
