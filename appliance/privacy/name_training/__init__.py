"""Builds the name model's training data and trains it (build time, not request time).

The shipped adapter in ``appliance/privacy/name_model/`` was produced by
``python -m appliance.privacy.name_training.train`` with its default seed; the corpus is
synthetic (Faker's names for dozens of locales, transliterated where their script is not
Latin, plus invented names built from their letters, in hand-written business frames), so
retraining needs no data from outside the machine. Needs the ``train`` extra (Faker,
anyascii, peft); the runtime detector needs none of it.

Modules: ``people`` (names and the ways people write them), ``frames`` (sentences around
them), ``corpus`` (labelled examples), ``train`` (fine-tuning and export).
"""
