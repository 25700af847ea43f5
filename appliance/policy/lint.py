"""Checks the schema alone cannot express: regexes that do not compile or backtrack
catastrophically, contradictory settings, and policies that switch anonymization off
without saying so. Each problem is (field path, message)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import regex

from appliance.policy.schema import Policy
from appliance.privacy.rules import Action

# The stdlib regex parser is the only place that exposes a pattern's structure (untyped, private).
sre_parse: Any = importlib.import_module("re._parser")
sre_c: Any = importlib.import_module("re._constants")
Problem = tuple[tuple[str | int, ...], str]
_REPEATS = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT}
_UNBOUNDED = 50  # a repeat allowing more than this counts as unbounded for nesting purposes
_PROBE_SECONDS = 0.25
_PROBE_CHARS = "a0 A-._@x1\t"


def _has_unbounded_repeat(items: Any) -> bool:
    for op, av in items:
        if op in _REPEATS:
            _, hi, sub = av
            if hi > _UNBOUNDED or _has_unbounded_repeat(sub):
                return True
        elif op == sre_c.SUBPATTERN:
            if _has_unbounded_repeat(av[-1]):
                return True
        elif op == sre_c.BRANCH and any(_has_unbounded_repeat(b) for b in av[1]):
            return True
    return False


def _nested_unbounded(items: Any) -> bool:
    """True for shapes like (a+)+ or (\\w+\\s?)*: an unbounded repeat of something that repeats."""
    for op, av in items:
        if op in _REPEATS:
            _, hi, sub = av
            if hi > 5 and _has_unbounded_repeat(sub):
                return True
            if _nested_unbounded(sub):
                return True
        elif op == sre_c.SUBPATTERN:
            if _nested_unbounded(av[-1]):
                return True
        elif op == sre_c.BRANCH and any(_nested_unbounded(b) for b in av[1]):
            return True
    return False


def _probes(pattern: str) -> list[str]:
    literals = {c for c in pattern if c.isalnum() or c in " -._@"} | set(_PROBE_CHARS)
    out = []
    for ch in sorted(literals)[:40]:
        for n in (30, 3000):
            out += [ch * n + "!", ch * n + "\n" + ch]
    return out


def check_regex(pattern: str) -> str | None:
    """None if usable; else why not. Rejects nested unbounded repeats outright and time-boxes
    every pattern against inputs that make backtracking engines blow up."""
    try:
        compiled = regex.compile(pattern)
        parsed = sre_parse.parse(pattern)
    except (regex.error, re.error) as exc:
        return f"invalid regular expression: {exc}"
    except RecursionError:
        return "regular expression is nested too deeply"
    if compiled.search("") is not None and compiled.fullmatch("") is not None:
        return "regular expression matches the empty string; it would tag nothing useful and everywhere"
    if _nested_unbounded(parsed):
        return (
            "regular expression nests unbounded repeats (like (a+)+), which can take exponential time; "
            "rewrite it without a repeated group that itself repeats"
        )
    for probe in _probes(pattern):
        try:
            compiled.search(probe, timeout=_PROBE_SECONDS)
        except TimeoutError:
            return "regular expression takes too long on adversarial input (catastrophic backtracking)"
    return None


def lint(policy: Policy) -> list[Problem]:
    problems: list[Problem] = []
    pii = policy.pii
    known_types = set(pii.entities)
    custom_types = {r.entity_type for r in pii.custom_recognizers}

    for i, rec in enumerate(pii.custom_recognizers):
        base: tuple[str | int, ...] = ("pii", "custom_recognizers", i)
        if not rec.patterns and not rec.deny_list:
            problems.append((base, "a custom recognizer needs at least one pattern or deny_list entry"))
        for j, pat in enumerate(rec.patterns):
            why = check_regex(pat.regex)
            if why:
                problems.append(((*base, "patterns", j, "regex"), why))
    names = [r.name for r in pii.custom_recognizers]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append((("pii", "custom_recognizers", i, "name"), f"recognizer name {name!r} is used twice"))

    if pii.detect is not None:
        detected = set(pii.detect) | custom_types
        for etype in sorted(known_types - detected):
            problems.append(
                (("pii", "entities", etype), f"a rule for {etype} has no effect because `detect` does not include it")
            )

    allowed = {v.casefold() for v in pii.allow_list}
    for i, rec in enumerate(pii.custom_recognizers):
        for j, word in enumerate(rec.deny_list):
            if word.casefold() in allowed:
                problems.append(
                    (("pii", "custom_recognizers", i, "deny_list", j), "this value is also in pii.allow_list")
                )

    for etype, rule in pii.entities.items():
        if rule.action is not Action.MASK and (rule.keep_last != 4 or rule.mask_char != "*"):
            problems.append((("pii", "entities", etype), "keep_last and mask_char only apply to action: mask"))

    if not policy.egress.restore_pseudonyms and policy.egress.scan_output and policy.egress.output_action == "keep":
        problems.append((("egress", "output_action"), "scan_output with output_action: keep does nothing"))
    if policy.retention.payload_days > policy.retention.audit_days:
        problems.append((("retention", "payload_days"), "payloads cannot be kept longer than their audit entries"))
    if policy.finetune.max_epsilon_per_dataset > policy.finetune.max_epsilon_total:
        problems.append(
            (("finetune", "max_epsilon_per_dataset"), "per-dataset epsilon exceeds the total budget per period")
        )
    if not policy.anonymizes_anything and not policy.acknowledge_no_anonymization:
        problems.append(
            (
                ("pii",),
                "this policy lets all personal data reach models untouched; "
                "set acknowledge_no_anonymization: true if that is really intended",
            )
        )
    return problems
