"""Tiny real models for the engine's tests: the MiniLM and SmolLM2 architectures (and their
real tokenizers) with a few small random layers, so a training step takes milliseconds.

They are real transformers models of the same classes the engine trains in production
(BERT with a pooler; Llama with tied embeddings and RMSNorm), saved in HF format, so every
code path from loading to saving runs; only the weights are small and random.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from appliance.models.store import minilm_directory
from appliance.training import LabeledText, PromptCompletion


def tiny_bert(into: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    )  # fmt: skip
    BertModel(config).save_pretrained(str(into))
    AutoTokenizer.from_pretrained(str(minilm_directory()), local_files_only=True).save_pretrained(str(into))
    return into


def tiny_llama(smollm2: Path, into: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(smollm2))
    config.hidden_size, config.intermediate_size = 16, 32
    config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads = 2, 2, 1
    config.head_dim = 8
    AutoModelForCausalLM.from_config(config).save_pretrained(str(into))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (smollm2 / name).exists():
            shutil.copy(smollm2 / name, into / name)
    return into


TOPICS = {
    "billing": ["invoice", "refund", "charge", "payment", "receipt"],
    "technical": ["crash", "error", "login", "bug", "timeout"],
    "shipping": ["parcel", "delivery", "courier", "tracking", "package"],
}


def labeled(n: int, seed: int = 0) -> list[LabeledText]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(sorted(TOPICS))
        out.append(LabeledText(f"my {rng.choice(TOPICS[label])} has a {rng.choice(TOPICS[label])} issue", label))
    return out


def generation(n: int, seed: int = 0) -> list[PromptCompletion]:
    rng = random.Random(seed)
    return [PromptCompletion(f"Where is order {rng.randint(100, 999)}?", "It ships tomorrow.") for _ in range(n)]
