"""Lazy per-invocation state: settings and services are built only when a command needs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click
from sqlalchemy import Engine

from appliance.config import Settings, load_settings
from appliance.db.engine import make_engine
from appliance.services.container import Services, build_services


@dataclass
class CliState:
    config_path: Path | None
    _settings: Settings | None = None
    _services: Services | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def engine(self) -> Engine:
        """The database alone: schema commands work without the master key."""
        if self._services is not None:
            return self._services.engine
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = build_services(self.settings)
        return self._services

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
        if self._engine is not None:
            self._engine.dispose()


pass_state = click.make_pass_decorator(CliState)
