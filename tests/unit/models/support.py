"""Real models for the model tests, loaded once per pytest process and shared between the
unit and integration folders (a session fixture in one folder cannot serve the other).

The converted SmolLM2 lives in pytest's cache directory, so only the first run on a
checkout pays for the GGUF conversion (about 25 s on 2 cores); ``test_store`` checks what
that conversion produced.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from appliance.models.base import ModelInput
from appliance.models.chat import LocalChatRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.manager import configure_torch_threads
from appliance.models.store import ModelStore, minilm_directory

SEEN: list[ModelInput] = []
"""Everything the shared runners were handed (the observer seam)."""


@functools.cache
def _fresh_store() -> Path:
    return Path(tempfile.mkdtemp(prefix="appliance-model-store-"))


def store_root(config: pytest.Config) -> Path:
    """pytest's cache dir (kept between runs), or a fresh temp dir under ``-p no:cacheprovider``."""
    cache = getattr(config, "cache", None)
    return Path(cache.mkdir("appliance-model-store")) if cache is not None else _fresh_store()


@functools.cache
def smollm2_dir(root: Path) -> Path:
    configure_torch_threads(2)
    return ModelStore(root).ensure_smollm2()


@functools.cache
def shared_chat(root: Path) -> LocalChatRunner:
    runner = LocalChatRunner(
        "smollm2-135m-instruct", smollm2_dir(root), max_batch=8, max_queue=16, observer=SEEN.append
    )
    runner.warmup()
    return runner


@functools.cache
def shared_embeddings() -> LocalEmbeddingRunner:
    configure_torch_threads(2)
    runner = LocalEmbeddingRunner("all-minilm-l6-v2", minilm_directory(), max_batch=32, observer=SEEN.append)
    runner.warmup()
    return runner


SUPPORT_LABELS = ("billing", "technical")
SUPPORT_TRAINING = [
    ("I was charged twice this month", "billing"),
    ("Please refund my last invoice", "billing"),
    ("My credit card payment failed", "billing"),
    ("Why is my bill so high", "billing"),
    ("I want to change my payment method", "billing"),
    ("The invoice amount is wrong", "billing"),
    ("Cancel my subscription and refund me", "billing"),
    ("I need a receipt for my payment", "billing"),
    ("You overcharged me", "billing"),
    ("How do I update my billing address", "billing"),
    ("The app crashes when I open it", "technical"),
    ("I cannot log in to my account", "technical"),
    ("The website shows an error 500", "technical"),
    ("My password reset email never arrives", "technical"),
    ("The sync feature is not working", "technical"),
    ("The page loads very slowly", "technical"),
    ("I get a timeout when uploading files", "technical"),
    ("The mobile app freezes on startup", "technical"),
    ("Bluetooth pairing keeps failing", "technical"),
    ("The software update broke my printer driver", "technical"),
]
"""Short support tickets for a two-label classifier; the held-out ones the tests use are
different sentences that are clearly one class."""


def train_support_classifier(out: Path, *, seed: int = 0) -> Path:
    """A real billing-vs-technical classifier built on MiniLM in a few seconds of CPU.

    The encoder stays frozen: its [CLS] states are computed once, and only the pooler and
    the new classification head are trained on them (full fine-tuning takes ~40 s on 2
    cores for the same held-out accuracy). Saved with its tokenizer in Hugging Face format,
    as an operator would copy it in.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    configure_torch_threads(2)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.manual_seed(seed)
    base = minilm_directory()
    id2label = dict(enumerate(SUPPORT_LABELS))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=2, id2label=id2label, label2id={v: k for k, v in id2label.items()}, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    texts = [t for t, _ in SUPPORT_TRAINING]
    targets = torch.tensor([SUPPORT_LABELS.index(label) for _, label in SUPPORT_TRAINING])
    model.eval()
    with torch.no_grad():
        cls = model.bert(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    head = [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    optimizer = torch.optim.Adam(head, lr=1e-3)
    for _ in range(150):
        logits = model.classifier(model.bert.pooler.dense(cls).tanh())
        torch.nn.functional.cross_entropy(logits, targets).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def minilm_copy(into: Path) -> Path:
    """A private copy of the built-in MiniLM directory, to register as a tenant's own model."""
    target = into / "minilm-copy"
    shutil.copytree(minilm_directory(), target)
    return target


def plaintext_samples(model_dir: Path) -> dict[str, bytes]:
    """Pieces of a model's files that must never appear in storage once it is sealed."""
    weights = (model_dir / "model.safetensors").read_bytes()
    middle = len(weights) // 2
    sample = weights[middle : middle + 64]
    assert len(set(sample)) > 16, "pick a slice of real weights, not padding"
    return {
        "config.json": (model_dir / "config.json").read_bytes(),
        "model.safetensors[64 bytes]": sample,
        "vocab.txt[64 bytes]": (model_dir / "vocab.txt").read_bytes()[5000:5064],
    }


def files_containing(root: Path, samples: dict[str, bytes]) -> list[str]:
    """``file: sample`` for every file under ``root`` that holds one of the samples."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        found += [f"{path}: {name}" for name, sample in samples.items() if sample in data]
    return found


def open_memory_files() -> list[str]:
    """This process's open anonymous memory files (what a sealed model is decrypted into)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/memfd:"):
                names.append(target)
    return names


def sealed_scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("appliance-sealed-*")}
