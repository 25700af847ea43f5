"""Tenant policies: the typed schema, YAML loading with precise errors, presets and linting."""

from appliance.policy.loader import PolicyError, load_policy_text
from appliance.policy.schema import Policy

__all__ = ["Policy", "PolicyError", "load_policy_text"]
