"""Typed dependencies handlers ask for by name."""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency

from appliance.services.container import Services

Svc: TypeAlias = NamedDependency[Services]
