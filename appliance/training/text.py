"""Examples to token tensors, the same way the serving runners see text.

A classifier row is tokenized as ``/v1/classifications`` tokenizes it (the model's own
tokenizer, truncated). A generation row is rendered with the chat model's chat template,
exactly as ``LocalChatRunner.render`` renders a request, and the loss is taken on the
assistant's tokens only: the model learns to answer, not to repeat the question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from appliance.errors import InvalidInput
from appliance.training.spec import ChatExample, ChatMessage, Example, LabeledText, PromptCompletion

IGNORE = -100
"""Label of a position that carries no loss (PyTorch's ``CrossEntropyLoss`` default)."""


def labeled_rows(examples: Sequence[Example]) -> list[LabeledText]:
    rows = [e for e in examples if isinstance(e, LabeledText)]
    if len(rows) != len(examples):
        raise InvalidInput("a classifier trains on (text, label) rows only")
    labels = {r.label for r in rows}
    if len(labels) < 2:
        raise InvalidInput("a classifier needs rows of at least two different labels")
    return rows


def generation_rows(examples: Sequence[Example]) -> list[tuple[ChatMessage, ...]]:
    """Every generation row as a conversation (a prompt/completion pair is one user turn and
    one assistant turn, which is how the chat endpoint will ask it)."""
    out: list[tuple[ChatMessage, ...]] = []
    for i, e in enumerate(examples):
        if isinstance(e, PromptCompletion):
            out.append((ChatMessage("user", e.prompt), ChatMessage("assistant", e.completion)))
        elif isinstance(e, ChatExample):
            if not any(m.role == "assistant" for m in e.messages):
                raise InvalidInput(f"example {i}: a chat example needs at least one assistant message")
            out.append(e.messages)
        else:
            raise InvalidInput("LoRA trains on (prompt, completion) or chat rows only")
    return out


@dataclass(frozen=True)
class Encoded:
    """Right-padded token tensors for all rows (CPU); ``labels`` is ``IGNORE`` where no loss is taken."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None
    token_type_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def take(self, indices: torch.Tensor) -> Encoded:
        """Rows ``indices``, trimmed to their longest real length (shorter batches run faster)."""
        mask = self.attention_mask[indices]
        width = max(1, int(mask.sum(dim=1).max().item())) if len(indices) else 1

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[indices][:, :width]

        ids = cut(self.input_ids)
        assert ids is not None
        return Encoded(ids, mask[:, :width], cut(self.labels), cut(self.token_type_ids))


def encode_texts(tokenizer: Any, texts: Sequence[str], max_len: int) -> Encoded:
    features = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return Encoded(features["input_ids"], features["attention_mask"], None, features.get("token_type_ids"))


def encode_conversations(tokenizer: Any, conversations: Sequence[Sequence[ChatMessage]], max_len: int) -> Encoded:
    """Chat-template rendering with assistant-only labels, cut at ``max_len`` tokens."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise InvalidInput("the chat model's tokenizer has neither a padding nor an end token")
    rows: list[tuple[list[int], list[int]]] = []
    for messages in conversations:
        ids = _render(tokenizer, messages, generation_prompt=False)
        labels = [IGNORE] * len(ids)
        for i, message in enumerate(messages):
            if message.role == "assistant":
                # The template renders a prefix of the conversation as a prefix of the tokens,
                # so the assistant's turn is what its own rendering adds to the one before it.
                start = len(_render(tokenizer, messages[:i], generation_prompt=True)) if i else 0
                end = len(_render(tokenizer, messages[: i + 1], generation_prompt=False))
                labels[start:end] = ids[start:end]
        rows.append((ids[:max_len], labels[:max_len]))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    label_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (ids, labels) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        label_ids[r, : len(labels)] = torch.tensor(labels, dtype=torch.long)
        mask[r, : len(ids)] = 1
    return Encoded(input_ids, mask, label_ids)


def _render(tokenizer: Any, messages: Sequence[ChatMessage], *, generation_prompt: bool) -> list[int]:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
