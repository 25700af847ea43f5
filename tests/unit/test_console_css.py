"""The console's focus indicator against the backgrounds it is drawn on, computed from
console.css itself: WCAG 1.4.11 asks 3:1 between a focus indicator and what is next to it.

The ring is dark (``--focus``) between two light rings (``--focus-halo``): on a light
background the dark ring carries the contrast, on the dark header the light rings do, and the
dark ring always stands out against the light rings it sits between.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).parents[2] / "appliance" / "api" / "console_static" / "console.css").read_text("utf-8")
MIN_RATIO = 3.0


def _variables() -> dict[str, str]:
    root = re.search(r":root\s*\{(.*?)\}", CSS, re.S)
    assert root is not None
    return dict(re.findall(r"(--[a-z-]+):\s*(#[0-9a-fA-F]{6})\s*;", root.group(1)))


def _background(selector: str) -> str:
    """The background of the first rule for exactly ``selector``, variables resolved."""
    rule = re.search(rf"(?m)^{re.escape(selector)}\s*\{{([^}}]*)\}}", CSS)
    assert rule is not None, selector
    value = re.search(r"background:\s*([^;]+);", rule.group(1))
    assert value is not None, selector
    return _resolve(value.group(1).strip())


def _resolve(value: str) -> str:
    var = re.fullmatch(r"var\((--[a-z-]+)\)", value)
    return _variables()[var.group(1)] if var else value


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_contrast_formula_matches_known_ratios() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#f5a300", "#ffffff") == pytest.approx(2.07, abs=0.01)  # the old amber ring: fails


def test_focus_visible_draws_the_dark_ring_inside_a_light_halo() -> None:
    rule = re.search(r"(?m)^:focus-visible\s*\{([^}]*)\}", CSS)
    assert rule is not None
    assert re.search(r"outline:\s*\d+px solid var\(--focus\)", rule.group(1))
    assert re.search(r"box-shadow:[^;]*var\(--focus-halo\)", rule.group(1))


# Where focusable controls sit: cards, dialogs and inputs (paper), the page, the one-time
# secret box, notices, and the header's links and sign-out button.
LIGHT = [":root", ".card", ".secret", ".notice"]


@pytest.mark.parametrize("selector", LIGHT)
def test_on_light_backgrounds_the_dark_ring_reaches_3_to_1(selector: str) -> None:
    background = _background(selector)
    assert contrast(_variables()["--focus"], background) >= MIN_RATIO, (selector, background)


def test_on_the_dark_header_the_light_halo_reaches_3_to_1() -> None:
    header = _background(".top-bar")
    assert contrast(_variables()["--focus-halo"], header) >= MIN_RATIO


def test_the_dark_ring_stands_out_from_the_halo_around_it() -> None:
    v = _variables()
    assert contrast(v["--focus"], v["--focus-halo"]) >= MIN_RATIO
