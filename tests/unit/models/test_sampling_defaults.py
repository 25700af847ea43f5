"""Where a chat model's sampling defaults come from: registration options over the model's
generation_config.json over OpenAI's defaults; bad values are refused or ignored, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import InvalidInput
from appliance.models.registry import BUILTINS
from appliance.models.sampling import SamplingDefaults, check_options, from_generation_config, resolve


def _model_dir(tmp_path: Path, config: Any) -> Path:
    (tmp_path / "generation_config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
    return tmp_path


@pytest.mark.parametrize(
    ("generation_config", "options", "expected"),
    [
        (None, {}, SamplingDefaults(1.0, 1.0, 512)),
        ({"temperature": 0.7, "top_p": 0.8, "max_new_tokens": 300}, {}, SamplingDefaults(0.7, 0.8, 300)),
        ({"temperature": 0.7, "top_p": 0.8}, {"default_temperature": "0.1"}, SamplingDefaults(0.1, 0.8, 512)),
        ({"temperature": 0.7}, {"default_max_tokens": 64, "default_top_p": 0.5}, SamplingDefaults(0.7, 0.5, 64)),
        ({"do_sample": False, "bos_token_id": 1}, {}, SamplingDefaults(1.0, 1.0, 512)),
        ({"temperature": 9, "top_p": "x", "max_new_tokens": -3}, {}, SamplingDefaults(1.0, 1.0, 512)),
        ("{not json", {"default_temperature": 0}, SamplingDefaults(0.0, 1.0, 512)),
        ([1, 2], {}, SamplingDefaults(1.0, 1.0, 512)),
    ],
)
def test_options_win_over_the_generation_config_which_wins_over_openai_defaults(
    tmp_path: Path, generation_config: Any, options: dict[str, Any], expected: SamplingDefaults
) -> None:
    model_dir = _model_dir(tmp_path, generation_config) if generation_config is not None else tmp_path
    assert resolve(options, model_dir) == expected


def test_an_upstream_model_has_no_directory_and_only_its_options() -> None:
    assert from_generation_config(None) == {}
    assert resolve({"default_temperature": 0.3}) == SamplingDefaults(0.3, 1.0, 512)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"default_temperature": "hot"}, "default_temperature must be a number"),
        ({"default_temperature": 2.5}, "default_temperature must be between 0 and 2"),
        ({"default_top_p": 0}, "default_top_p must be greater than 0 and at most 1"),
        ({"default_max_tokens": "12.5"}, "default_max_tokens must be a whole number"),
        ({"default_max_tokens": True}, "default_max_tokens must be a number"),
        ({"default_temperature": "nan"}, "default_temperature must be a finite number"),
    ],
)
def test_bad_registration_options_are_refused_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_options(options)


def test_cli_text_options_are_stored_as_numbers_and_others_pass_through() -> None:
    checked = check_options({"default_temperature": "0.3", "default_max_tokens": "64", "remote_model": "m"})
    assert checked == {"default_temperature": 0.3, "default_max_tokens": 64, "remote_model": "m"}


def test_the_builtin_smollm2_samples_cool_and_short() -> None:
    smollm2 = next(m for m in BUILTINS if m.kind == "chat")
    defaults = resolve(smollm2.options)
    assert defaults.temperature <= 0.3
    assert defaults.max_tokens <= 256
    assert defaults.capped(50).max_tokens == 50
