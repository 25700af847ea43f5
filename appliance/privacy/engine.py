"""Loading the NER pipeline and the Presidio analyzer, offline and only what we use.

Presidio's defaults are wrong for an appliance: ``AnalyzerEngine()`` downloads
``en_core_web_lg`` when it is missing, and its email recognizer (through tldextract)
fetches the public suffix list. Both are switched off here: the environment variable is
set before Presidio is first imported (import this module, not Presidio, first), and the
spaCy pipeline is loaded by us from an installed package, never downloaded.

Only named-entity recognition is used, so every other pipeline component (tagger,
parser, attribute ruler, lemmatizer) is disabled; the lemmas Presidio's context enhancer
wants are replaced by lower-cased token text, which its substring matching handles well
("phones" still contains "phone").
"""

from __future__ import annotations

import os

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""  # must precede any presidio import

import logging
from pathlib import Path
from typing import Any

import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.language import Language
from spacy.tokens import Doc

from appliance.config import PrivacySettings
from appliance.errors import ConfigError

LANGUAGE = "en"

# Presidio's own conf/spacy.yaml mapping: ORG is ignored there for its false positives and
# we follow, so "replace every detected entity" does not mangle product and company names.
NER_TO_PRESIDIO = {
    "PER": "PERSON",
    "PERSON": "PERSON",
    "NORP": "NRP",
    "FAC": "LOCATION",
    "LOC": "LOCATION",
    "LOCATION": "LOCATION",
    "GPE": "LOCATION",
    "ORG": "ORGANIZATION",
    "ORGANIZATION": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
NER_LABELS_IGNORED = (
    "ORG",
    "ORGANIZATION",
    "CARDINAL",
    "EVENT",
    "LANGUAGE",
    "LAW",
    "MONEY",
    "ORDINAL",
    "PERCENT",
    "PRODUCT",
    "QUANTITY",
    "WORK_OF_ART",
)


# Presidio logs the words around every match at DEBUG ("Context list is: ... the email
# address ..."): raw PII. Its loggers stay at WARNING whatever the root level is.
for _name in ("presidio-analyzer", "presidio-anonymizer"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def ner_model_configuration() -> NerModelConfiguration:
    return NerModelConfiguration(
        model_to_presidio_entity_mapping=dict(NER_TO_PRESIDIO),
        labels_to_ignore=list(NER_LABELS_IGNORED),
        low_score_entity_names=[],
    )


def presidio_nlp_configuration(model_name: str) -> dict[str, Any]:
    """The explicit configuration stock Presidio needs to use ``model_name`` (used by the bench)."""
    return {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": LANGUAGE, "model_name": model_name}],
        "ner_model_configuration": {
            "model_to_presidio_entity_mapping": dict(NER_TO_PRESIDIO),
            "labels_to_ignore": list(NER_LABELS_IGNORED),
            "low_score_entity_names": [],
        },
    }


def load_ner_pipeline(settings: PrivacySettings) -> Language:
    """The configured spaCy pipeline with only NER (and what NER listens to) enabled.

    In patterns-only mode a blank English tokenizer stands in: pattern recognizers still
    get tokens for their context words, and nothing is loaded from disk.
    """
    if settings.patterns_only:
        return spacy.blank(LANGUAGE)
    name = settings.nlp_model
    if not (spacy.util.is_package(name) or Path(name).is_dir()):
        raise ConfigError(
            f"privacy.nlp_model: the spaCy pipeline {name!r} is not installed; install its wheel "
            "(models are never downloaded at run time) or set privacy.patterns_only = true"
        )
    try:
        nlp = spacy.load(name)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"privacy.nlp_model: the spaCy pipeline {name!r} could not be loaded: {exc}") from None
    if "ner" not in nlp.pipe_names:
        raise ConfigError(f"privacy.nlp_model: the spaCy pipeline {name!r} has no 'ner' component")
    # Keep NER and any shared embedding layer NER listens to (tok2vec/transformer in some
    # pipelines); en_core_web_sm's NER has its own embedding, so only NER runs there.
    needed = {"ner"} | {
        comp_name for comp_name, comp in nlp.pipeline if "ner" in (getattr(comp, "listening_components", None) or [])
    }
    for comp_name in list(nlp.pipe_names):
        if comp_name not in needed:
            nlp.disable_pipe(comp_name)
    return nlp


class NerOnlyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine over an already loaded, NER-only pipeline.

    ``load`` never downloads (the base class would), and artifacts can be built from docs
    that came out of ``nlp.pipe`` so a whole batch shares one pass through the model.
    """

    def __init__(self, nlp: Language, model_name: str) -> None:
        super().__init__(
            models=[{"lang_code": LANGUAGE, "model_name": model_name}],
            ner_model_configuration=ner_model_configuration(),
        )
        self.nlp = {LANGUAGE: nlp}  # type: ignore[assignment]  # the base class types it as None until load()

    def load(self) -> None:
        """Already loaded in ``__init__``; the base class would download a missing model."""

    def artifacts(self, doc: Doc) -> NlpArtifacts:
        return self._doc_to_nlp_artifact(doc, LANGUAGE)

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(
            list(doc.ents), [self.ner_model_configuration.default_score or 0.85] * len(doc.ents)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lower_ for token in doc],  # no lemmatizer: see the module docstring
            nlp_engine=self,
            language=language,
            scores=scores,
        )


def make_nlp_engine(nlp: Language, settings: PrivacySettings) -> NerOnlyNlpEngine:
    return NerOnlyNlpEngine(nlp, "blank" if settings.patterns_only else settings.nlp_model)


class _CallOwnedResult(RecognizerResult):
    """A result made for one ``analyze`` call and dropped after it: safe to change in place."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _CallOwnedResult:
        return self


class InPlaceContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's lemma context enhancer without its defensive deep copy.

    The stock enhancer deep-copies every result, explanation and metadata included,
    before raising scores; that copy cost about a twentieth of a whole analysis. The
    analyzer builds the results for this call alone and keeps only what the enhancer
    returns, so scoring them in place is safe.
    """

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        for result in raw_results:
            if type(result) is RecognizerResult:
                result.__class__ = _CallOwnedResult
        return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)


def build_analyzer(engine: NerOnlyNlpEngine, registry: RecognizerRegistry) -> AnalyzerEngine:
    # Context words are also looked for just after a value ("472-856-3707 fax"), not only
    # in the five words before it as Presidio does by default.
    return AnalyzerEngine(
        context_aware_enhancer=InPlaceContextEnhancer(context_prefix_count=5, context_suffix_count=2),
        registry=registry,
        nlp_engine=engine,
        supported_languages=[LANGUAGE],
        default_score_threshold=0.0,
    )
