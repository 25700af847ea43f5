"""PII detection (presidio-analyzer), transforms and the reversible pseudonym vault.

Presidio's email recognizer module imports tldextract (the appliance's own e-mail
recognizer no longer asks it anything), whose module-level extractor fetches the public
suffix list from the internet unless ``TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS`` is set (and
empty) *before tldextract is imported*. Setting it here, in the package that is
the only importer of Presidio, makes that true whichever submodule is imported first;
tldextract then uses the snapshot it ships with.

Modules: ``rules`` (policy schema), ``engine`` (spaCy + Presidio loading), ``recognizers``,
``detection`` (:class:`Detector`), ``transforms``, ``vault`` (pseudonym storage),
``restore`` (de-anonymization, also streaming).
"""

import os

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
