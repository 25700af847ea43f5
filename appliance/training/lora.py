"""The ``lora`` task: a LoRA adapter (peft) on the chat model, merged into a full causal-LM
directory when training ends, so the existing chat runner serves it unchanged.

Only the LoRA matrices are trainable. That keeps the DP pitfalls of SmolLM2 out of the way:
its tied ``embed_tokens``/``lm_head`` (ghost clipping refuses trainable tied parameters) and
its ``LlamaRMSNorm`` layers (no per-sample gradient rule in Opacus) stay frozen.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from appliance.errors import InvalidInput
from appliance.training.spec import Example, TrainingSpec
from appliance.training.tasks import disable_dropout, split_holdout
from appliance.training.text import IGNORE, Encoded, encode_conversations, generation_rows

log = logging.getLogger(__name__)

_EVAL_CHUNK = 8


class LoraTask:
    # CUDA hooks runs: bf16 matmuls, per-sample gradients cast to fp32 before clipping (devices.py);
    # the LoRA weights and the optimizer stay fp32. Ghost runs stay fp32 throughout.
    autocast = True
    labels: tuple[str, ...] = ()

    def __init__(self, spec: TrainingSpec, examples: Sequence[Example], device: torch.device) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        conversations = generation_rows(examples)
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(spec.base_model_dir), local_files_only=True)
        if not getattr(self._tokenizer, "chat_template", None):
            raise InvalidInput("LoRA training needs a chat model whose tokenizer has a chat template")
        base: Any = AutoModelForCausalLM.from_pretrained(
            str(spec.base_model_dir), dtype=torch.float32, local_files_only=True
        )
        names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        missing = sorted(set(spec.lora_target_modules) - names)
        if missing:
            raise InvalidInput(f"training.lora_target_modules: the model has no module named {', '.join(missing)}")
        config = LoraConfig(
            r=spec.lora_rank,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules=list(spec.lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 renamed
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            model: Any = get_peft_model(base, config)
        if spec.lora_dropout == 0:
            disable_dropout(model)
        self._model = model.to(device)
        self._device = device
        self.module: nn.Module = self._model

        encoded = encode_conversations(self._tokenizer, conversations, spec.max_seq_len)
        self.truncated = encoded.truncated
        if encoded.truncated:
            log.warning(
                "%d of %d rows are longer than max_seq_len %d tokens and are cut at the end",
                encoded.truncated, len(conversations), spec.max_seq_len,
            )  # fmt: skip
        train_idx, held_idx = split_holdout(len(conversations), spec.holdout_fraction, spec.seed)
        self._train = encoded.take(train_idx)
        self._held = encoded.take(held_idx)
        self.n_train = len(train_idx)
        self.n_holdout = len(held_idx)

    def _forward(self, module: nn.Module, part: Encoded) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        assert part.labels is not None
        out = module(input_ids=part.input_ids.to(self._device), attention_mask=part.attention_mask.to(self._device))
        logits = out.logits[:, :-1]
        targets = part.labels[:, 1:].to(self._device)
        batch, seq = int(logits.shape[0]), int(logits.shape[1])
        return logits.reshape(batch * seq, -1), targets.reshape(-1), (batch, seq)

    def logits(self, module: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        return self._forward(module, self._train.take(indices))

    @torch.no_grad()
    def sequence_losses(self, part: Encoded) -> torch.Tensor:
        """Mean token loss of each row over its labelled tokens."""
        self._model.eval()
        out = []
        for start in range(0, len(part), _EVAL_CHUNK):
            chunk = part.take(torch.arange(start, min(start + _EVAL_CHUNK, len(part))))
            logits, targets, (batch, seq) = self._forward(self._model, chunk)
            out.append(per_sequence_loss(logits.float(), targets, (batch, seq)).cpu())
        self._model.train()
        return torch.cat(out) if out else torch.zeros(0)

    def evaluate(self) -> dict[str, float]:
        out = {"truncated_rows": float(self.truncated)}
        if not self.n_holdout:
            return out
        loss = float(self.sequence_losses(self._held).mean().item())
        return {**out, "holdout_loss": loss, "holdout_perplexity": math.exp(min(loss, 50.0))}

    def save(self, output_dir: Path) -> None:
        merged: Any = self._model.merge_and_unload()
        merged.save_pretrained(str(output_dir))
        self._tokenizer.save_pretrained(str(output_dir))


def per_sequence_loss(logits: torch.Tensor, targets: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Each sequence's mean loss over its labelled tokens (the privacy unit is the sequence);
    the same reduction Opacus's ghost-clipping criterion applies."""
    tokens = nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none").view(shape)
    counts = (targets.view(shape) != IGNORE).sum(dim=1).clamp(min=1)
    return tokens.sum(dim=1) / counts
