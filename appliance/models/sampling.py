"""A chat model's sampling defaults: what a request that omits ``temperature``, ``top_p`` or
``max_tokens`` gets.

OpenAI's API defaults to temperature 1 and top_p 1, which small local models answer with
noise; engines people know apply the model's own recommendation instead (vLLM reads the
model's ``generation_config.json``, Ollama its Modelfile). Here, from weakest to strongest:

1. OpenAI's defaults (temperature 1, top_p 1) and 512 new tokens;
2. ``temperature``, ``top_p`` and ``max_new_tokens`` from the model directory's
   ``generation_config.json`` (``do_sample`` is not consulted, as in vLLM);
3. the registration's options ``default_temperature``, ``default_top_p`` and
   ``default_max_tokens`` (``appliance model add --default-temperature ...``); the built-in
   SmolLM2 carries its own, chosen so it answers briefly and coherently.

A field the request sets always wins. The tenant policy's ``limits.max_tokens`` caps the
default token budget (a request asking for more than the cap is refused instead).
``repetition_penalty`` in a generation config is not applied: the local runner does not
implement it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from appliance.errors import InvalidInput

GENERATION_CONFIG = "generation_config.json"


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512

    def capped(self, max_tokens: int) -> SamplingDefaults:
        return replace(self, max_tokens=min(self.max_tokens, max_tokens))


def _temperature(value: Any) -> float:
    number = _number(value)
    if not 0 <= number <= 2:
        raise ValueError("between 0 and 2")
    return number


def _top_p(value: Any) -> float:
    number = _number(value)
    if not 0 < number <= 1:
        raise ValueError("greater than 0 and at most 1")
    return number


def _max_tokens(value: Any) -> int:
    number = _number(value)
    if number != int(number) or not 1 <= number <= 1_000_000:
        raise ValueError("a whole number from 1 to 1000000")
    return int(number)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number")
    try:
        number = float(value)  # CLI options arrive as text
    except (TypeError, ValueError):
        raise ValueError("a number") from None
    if not math.isfinite(number):
        raise ValueError("a finite number")
    return number


OPTIONS = {"default_temperature": _temperature, "default_top_p": _top_p, "default_max_tokens": _max_tokens}
"""Registration options that set a default, with their checks."""

_FIELDS = {"default_temperature": "temperature", "default_top_p": "top_p", "default_max_tokens": "max_tokens"}
_GENERATION_FIELDS = {"temperature": _temperature, "top_p": _top_p, "max_new_tokens": _max_tokens}


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The registration options with the sampling ones parsed; InvalidInput names a bad one."""
    checked = dict(options)
    for key, parse in OPTIONS.items():
        if key in options:
            try:
                checked[key] = parse(options[key])
            except ValueError as exc:
                raise InvalidInput(f"model option {key} must be {exc}") from None
    return checked


def from_generation_config(model_dir: Path | None) -> dict[str, float | int]:
    """The sampling fields a model directory recommends; ignores what is absent or unusable
    (a model's file must never stop it from loading)."""
    if model_dir is None:
        return {}
    try:
        config = json.loads((model_dir / GENERATION_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    found: dict[str, float | int] = {}
    for key, parse in _GENERATION_FIELDS.items():
        if config.get(key) is not None:
            try:
                found["max_tokens" if key == "max_new_tokens" else key] = parse(config[key])
            except ValueError:
                continue
    return found


def resolve(options: Mapping[str, Any], model_dir: Path | None = None) -> SamplingDefaults:
    """The defaults for one registration: its options over its generation config over OpenAI's."""
    fields: dict[str, Any] = dict(from_generation_config(model_dir))
    for key, value in check_options(options).items():
        if key in _FIELDS:
            fields[_FIELDS[key]] = value
    return SamplingDefaults(**fields)
