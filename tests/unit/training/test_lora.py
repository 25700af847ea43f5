"""LoRA on a tiny Llama with SmolLM2's tokenizer and chat template (tied embeddings, RMSNorm)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from appliance.errors import InvalidInput
from appliance.training import ChatExample, ChatMessage, PromptCompletion, TrainingSpec, train
from appliance.training.text import IGNORE, encode_conversations, generation_rows
from tests.unit.training.support import generation


def lora_spec(model: Path, **overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = {
        "task": "lora", "base_model_dir": model, "target_epsilon": 8.0, "delta": 1e-3, "epochs": 1,
        "batch_size": 4, "max_seq_len": 48, "holdout_fraction": 0.2, "device": "cpu", "lora_rank": 2,
    }  # fmt: skip
    return TrainingSpec(**{**base, **overrides})


def test_only_the_assistant_turns_carry_loss(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    rows = [
        PromptCompletion("Where is my order?", "It ships tomorrow."),
        ChatExample((ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello."), ChatMessage("user", "Bye"),
                     ChatMessage("assistant", "Goodbye."))),
    ]  # fmt: skip
    encoded = encode_conversations(tokenizer, generation_rows(rows), 256)
    assert encoded.labels is not None
    learned = [tokenizer.decode([t for t in row.tolist() if t != IGNORE]) for row in encoded.labels]
    assert learned[0] == "It ships tomorrow.<|im_end|>\n"
    assert learned[1] == "Hello.<|im_end|>\nGoodbye.<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is my order?"}], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(encoded.input_ids[0][: encoded.attention_mask[0].sum()]).startswith(prompt)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_lora_trains_only_the_adapter_and_saves_a_merged_model_with_its_tokenizer(
    mode: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    result = train(lora_spec(tiny_llama_dir, dp_mode=mode), generation(10), tmp_path / "m")
    card = result.card
    assert (card.dp_mode, card.task) == (mode, "lora")
    assert set(card.metrics) >= {"holdout_loss", "holdout_perplexity"}
    out = result.output_dir
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    assert not (out / "adapter_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    merged, base = load_file(str(out / "model.safetensors")), load_file(str(tiny_llama_dir / "model.safetensors"))
    assert not any("lora" in name for name in merged)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[name], base[name])  # the adapter was merged in
    assert torch.equal(merged["model.norm.weight"], base["model.norm.weight"])  # frozen stays frozen


def test_an_unknown_lora_target_module_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no module named c_attn"):
        train(lora_spec(tiny_llama_dir, lora_target_modules=("c_attn",)), generation(10), tmp_path / "m")
