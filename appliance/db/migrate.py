"""Run the Alembic migrations shipped in ``appliance/db/migrations`` programmatically."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "appliance.db:migrations")
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_config(engine)).get_current_head()


def current_revision(bind: Engine | Connection) -> str | None:
    """The schema revision; a connection answers inside its own transaction (a backup's snapshot)."""
    if isinstance(bind, Connection):
        return MigrationContext.configure(bind).get_current_revision()
    with bind.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def knows_revision(engine: Engine, revision: str) -> bool:
    """Whether ``revision`` is one of the migrations this version ships."""
    try:
        return ScriptDirectory.from_config(_config(engine)).get_revision(revision) is not None
    except CommandError:
        return False


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)
