"""The engine on the real default models, and what it writes served by the real runners."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from safetensors.torch import load_file

from appliance.models.base import ChatMessage, ChatRequest
from appliance.models.chat import LocalChatRunner
from appliance.models.classifier import LocalClassifierRunner
from appliance.models.store import minilm_directory
from appliance.training import PromptCompletion, TrainingSpec, train
from tests.unit.training.support import labeled


@pytest.mark.slow
def test_a_dp_classifier_on_the_real_minilm_is_served_by_the_classifications_runner(tmp_path: Path) -> None:
    spec = TrainingSpec(
        task="classifier", base_model_dir=minilm_directory(), base_model_name="all-minilm-l6-v2",
        target_epsilon=8.0, delta=1e-3, epochs=2, batch_size=16, learning_rate=2e-2, max_seq_len=16,
        holdout_fraction=0.2, device="cpu", dataset_hash="sha256:test",
    )  # fmt: skip
    result = train(spec, labeled(80), tmp_path / "m", secret=7)  # a fixed secret: no flaky noise draw
    assert result.card.base_model == "all-minilm-l6-v2" and result.card.dataset_hash == "sha256:test"
    assert result.card.dp_mode == "ghost"  # auto, for a classifier on a CPU
    runner = LocalClassifierRunner("tenant-topics", result.output_dir, max_batch=4)
    try:
        runner.warmup()
        answer = asyncio.run(runner.classify(["my parcel has a courier issue"]))
        assert set(runner.labels) == {"billing", "shipping", "technical"}
        assert answer.items[0].labels[0].label == "shipping"
    finally:
        runner.close()


@pytest.mark.slow
def test_a_dp_lora_on_the_real_smollm2_is_merged_and_served_by_the_chat_runner(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    rows = [PromptCompletion(f"Code word {i}?", "Blue falcon.") for i in range(4)]
    spec = TrainingSpec(
        task="lora", base_model_dir=smollm2_dir, target_epsilon=8.0, delta=1e-3, epochs=1, batch_size=2,
        max_seq_len=32, holdout_fraction=0.0, learning_rate=1e-2, device="cpu", lora_rank=4,
        lora_target_modules=("q_proj", "v_proj"),
    )  # fmt: skip
    result = train(spec, rows, tmp_path / "m")
    assert result.card.steps == 2 and result.card.dp_mode == "hooks"
    merged, base = (
        load_file(str(result.output_dir / "model.safetensors")),
        load_file(str(smollm2_dir / "model.safetensors")),
    )
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (merged[name] == base[name]).all()
    runner = LocalChatRunner("tenant-chat", result.output_dir, max_batch=1, max_queue=2)
    try:
        runner.warmup()
        reply = asyncio.run(runner.complete(ChatRequest([ChatMessage("user", "Code word 1?")], max_tokens=4)))
        assert reply.usage.completion_tokens > 0
    finally:
        runner.close()
