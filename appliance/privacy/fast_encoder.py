"""A lean forward pass of the name tagger for inference, in the CPU's fastest precision.

Why not call the transformers module: for one short text most of the time went into
Python around small matrix products (module hooks, output bookkeeping, separate query,
key and value projections). Here each layer is five fused operations over weights
copied once at load: about a fifth faster in float32. Where the CPU multiplies bfloat16
natively (AVX-512 BF16, AMX), weights are kept in bfloat16 and a pass is about twice as
fast again; which precision runs is measured once at load, not guessed, because on CPUs
without native support bfloat16 is emulated and slower. Tag decisions agree with the
float32 module (tested); probabilities differ in the third decimal at most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  the usual spelling

__all__ = ["FastTagger", "fastest_dtype"]


@dataclass(frozen=True)
class _Layer:
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    norm1: tuple[torch.Tensor, torch.Tensor]
    up_w: torch.Tensor
    up_b: torch.Tensor
    down_w: torch.Tensor
    down_b: torch.Tensor
    norm2: tuple[torch.Tensor, torch.Tensor]


class FastTagger:
    """Logits of a :class:`~appliance.privacy.name_model.NameTagger` without its modules."""

    def __init__(self, tagger: Any, dtype: torch.dtype) -> None:
        bert = tagger.encoder
        config = bert.config
        if config.hidden_act != "gelu" or getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("the fast tagger supports BERT encoders with GELU and absolute positions only")
        self.dtype = dtype
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.eps = float(config.layer_norm_eps)

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dtype).contiguous()

        emb = bert.embeddings
        self.words = cast(emb.word_embeddings.weight)
        self.cases = cast(tagger.case_embeddings.weight)
        self.positions = cast(emb.position_embeddings.weight + emb.token_type_embeddings.weight[0])
        self.norm0 = (cast(emb.LayerNorm.weight), cast(emb.LayerNorm.bias))
        self.layers = []
        for layer in bert.encoder.layer:
            att = layer.attention
            self.layers.append(
                _Layer(
                    qkv_w=cast(torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight])),
                    qkv_b=cast(torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias])),
                    out_w=cast(att.output.dense.weight),
                    out_b=cast(att.output.dense.bias),
                    norm1=(cast(att.output.LayerNorm.weight), cast(att.output.LayerNorm.bias)),
                    up_w=cast(layer.intermediate.dense.weight),
                    up_b=cast(layer.intermediate.dense.bias),
                    down_w=cast(layer.output.dense.weight),
                    down_b=cast(layer.output.dense.bias),
                    norm2=(cast(layer.output.LayerNorm.weight), cast(layer.output.LayerNorm.bias)),
                )
            )
        self.head_w = cast(tagger.classifier.weight)
        self.head_b = cast(tagger.classifier.bias)

    def __call__(self, input_ids: torch.Tensor, case: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Float32 logits, shape (batch, tokens, labels). Padding positions are masked out."""
        batch, tokens = input_ids.shape
        hidden, heads = self.hidden, self.heads
        x = F.embedding(input_ids, self.words) + F.embedding(case, self.cases) + self.positions[:tokens]
        x = F.layer_norm(x, (hidden,), *self.norm0, self.eps)
        mask = None
        if not bool(attention_mask.all()):
            mask = attention_mask[:, None, None, :].to(torch.bool)
        for p in self.layers:
            qkv = F.linear(x, p.qkv_w, p.qkv_b).view(batch, tokens, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
            att = att.transpose(1, 2).reshape(batch, tokens, hidden)
            x = F.layer_norm(F.linear(att, p.out_w, p.out_b) + x, (hidden,), *p.norm1, self.eps)
            up = F.gelu(F.linear(x, p.up_w, p.up_b))
            x = F.layer_norm(F.linear(up, p.down_w, p.down_b) + x, (hidden,), *p.norm2, self.eps)
        return F.linear(x, self.head_w, self.head_b).float()


def fastest_dtype(hidden: int = 384, rows: int = 32, repeats: int = 30) -> torch.dtype:
    """bfloat16 when this CPU multiplies it at least a third faster than float32, else float32."""
    a32 = torch.randn(rows, hidden)
    w32 = torch.randn(4 * hidden, hidden)
    timings: dict[torch.dtype, float] = {}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            a, w = a32.to(dtype), w32.to(dtype)
            F.linear(a, w)  # first call: kernel selection
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(repeats):
                    F.linear(a, w)
                best = min(best, time.perf_counter() - start)
            timings[dtype] = best
    return torch.bfloat16 if timings[torch.bfloat16] * 1.33 < timings[torch.float32] else torch.float32
