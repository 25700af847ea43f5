"""PII detection (presidio-analyzer), transforms and the reversible pseudonym vault."""
