"""Dataset upload throughput: what validation, sealing and storage add to PII detection.

For two disjoint, seeded synthetic corpora generated here (support tickets with contact
details as ``text,label`` rows; chat turns with names and places as ``prompt,completion``
rows), in one run on the same texts:

- baseline: the tenant policy's detection alone, ``Detector.analyze_groups`` over the rows in
  the chunks an upload uses (the floor: the upload cannot be faster than its detection);
- upload: ``DatasetService.add`` end to end on a fresh SQLite appliance: parse and validate,
  detect, transform, seal into the blob store, store the row and the audit entry.

Prints rows/s for both and the upload's share of the baseline. Usage:
``python -m bench.finetune_ingest [--rows 2000]`` (about a minute per 2,000 rows on 2 cores).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIRST = ["Anna", "Jonas", "Maria", "Liam", "Sofia", "Noah", "Elena", "Omar", "Grace", "Mateo", "Yuki", "Priya"]
LAST = ["Berg", "Okafor", "Lindqvist", "Rossi", "Novak", "Schmidt", "Haddad", "Tanaka", "Walsh", "Costa"]
CITIES = ["Lisbon", "Oslo", "Munich", "Toronto", "Nairobi", "Osaka", "Denver", "Lyon"]
ISSUES = {
    "billing": [
        "was charged twice for the last invoice",
        "needs a refund for order {n}",
        "sees a wrong amount on the bill",
    ],
    "technical": ["cannot log in since the update", "gets error {n} when syncing", "says the app crashes on start"],
    "shipping": ["has not received parcel {n}", "got a damaged package", "wants to change the delivery address"],
}


def tickets(rows: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        label = rng.choice(sorted(ISSUES))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        issue = rng.choice(ISSUES[label]).format(n=rng.randint(1000, 9999))
        contact = rng.choice(
            [f"{first.lower()}.{last.lower()}@example.org", f"+1 415 555 {rng.randint(1000, 9999)}", "no contact given"]
        )
        out.append({"text": f"{first} {last} {issue}; reach them at {contact}.", "label": label})
    return "".join(json.dumps(r) + "\n" for r in out).encode()


def chats(rows: int, seed: int) -> bytes:
    rng = random.Random(seed + 1)
    out = []
    for _ in range(rows):
        name, city = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.choice(CITIES)
        prompt = f"Write a short note to {name} about the meeting in {city} next week."
        completion = f"Dear {name}, see you in {city} on Tuesday. Best regards."
        out.append({"prompt": prompt, "completion": completion})
    return "".join(json.dumps(r) + "\n" for r in out).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()

    from appliance.config import Settings
    from appliance.crypto.keyring import MasterKeyring, new_key
    from appliance.roles import Role
    from appliance.services.container import build_services
    from appliance.services.dataset_rows import Limits, parse_dataset
    from appliance.services.datasets import ANONYMIZE_CHUNK
    from appliance.services.principal import Principal

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    key = new_key()
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp,
        dev_mode=True,
        database={"url": f"sqlite:///{tmp / 'a.db'}"},  # type: ignore[arg-type]
        keys={"dev_master_key": base64.b64encode(key).decode()},  # type: ignore[arg-type]
    )
    services = build_services(settings, keyring=MasterKeyring(key))
    services.schema.upgrade()
    op = Principal.local_operator()
    services.tenants.create(op, "bench")
    policy = (
        "extends: default\nfinetune:\n  allowed: true\n  max_dataset_rows: 1000000\n  max_dataset_bytes: 1073741824\n"
    )
    services.policies.apply(Principal(key_id=None, role=Role.COMPLIANCE), "bench", policy, "bench")
    tenant_id = services.tenants.get(op, "bench").id
    rules = services.policies.effective(tenant_id).policy.pii
    services.privacy.warm_up()
    detector = services.privacy.detector
    detector.analyze(["warm up Anna Berg in Oslo"], rules)

    print(f"dataset upload, {args.rows} rows per corpus, SQLite, {os.cpu_count()} CPUs")
    print(f"{'corpus':10s} {'detection alone':>18s} {'upload end to end':>20s} {'share':>7s}")
    for name, data in (("tickets", tickets(args.rows, 7)), ("chats", chats(args.rows, 7))):
        parsed = parse_dataset(data, "jsonl", None, Limits(max_rows=10**7, max_text_chars=100_000))
        groups = [row.texts for row in parsed.rows]
        start = time.perf_counter()
        for i in range(0, len(groups), ANONYMIZE_CHUNK):
            detector.analyze_groups(groups[i : i + ANONYMIZE_CHUNK], rules)
        base = len(groups) / (time.perf_counter() - start)
        start = time.perf_counter()
        view = services.datasets.add(op, "bench", f"{name}-{args.rows}", data, fmt="jsonl")
        upload = view.rows / (time.perf_counter() - start)
        print(f"{name:10s} {base:12.1f} rows/s {upload:14.1f} rows/s {100 * upload / base:6.0f}%")
    services.close()


if __name__ == "__main__":
    main()
