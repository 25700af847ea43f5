"""Lazy per-invocation state: settings and services are built only when a command needs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from appliance.config import Settings, load_settings
from appliance.services.container import Services, build_services
from appliance.services.schema import DatabaseSchema, open_schema


@dataclass
class CliState:
    config_path: Path | None
    _settings: Settings | None = None
    _services: Services | None = field(default=None, repr=False)
    _schema: DatabaseSchema | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def schema(self) -> DatabaseSchema:
        """The database alone: schema commands work without the master key."""
        if self._services is not None:
            return self._services.schema
        if self._schema is None:
            self._schema = open_schema(self.settings)
        return self._schema

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = build_services(self.settings)
        return self._services

    def close(self) -> None:
        if self._services is not None:
            self._services.close()
        if self._schema is not None:
            self._schema.close()


pass_state = click.make_pass_decorator(CliState)
