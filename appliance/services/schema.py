"""The database schema as the doors see it: which migration it is at, whether that is the
shipped head, and bringing it there.

``appliance db ...`` and ``/readyz`` need this without the master key, so it wraps only an
engine; :func:`open_schema` builds one from settings for commands that need nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import URL, Engine, text

from appliance.config import Settings
from appliance.db import migrate, tenancy
from appliance.db.engine import make_engine


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str | None

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


class DatabaseSchema:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def upgrade(self, revision: str = "head") -> SchemaStatus:
        """Apply the shipped migrations up to ``revision``; safe to repeat. On a PostgreSQL
        database whose tenant walls are on, the walls are applied again afterwards, so a table
        a migration adds is walled before the application uses it."""
        with self._engine.connect() as conn:
            walled = tenancy.walls_enabled(conn)
        migrate.upgrade(self._engine, revision)
        if walled:
            self.enable_row_level_security()
        return self.status()

    def status(self) -> SchemaStatus:
        return SchemaStatus(migrate.current_revision(self._engine), migrate.head_revision(self._engine))

    def is_current(self) -> bool:
        return self.status().up_to_date

    def readiness(self) -> str | None:
        """None when the database answers and its schema is at the head; else why not (for
        ``/readyz``: the reason never carries the URL or a driver's message)."""
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            current = self.is_current()
        except Exception:  # noqa: BLE001 - any database failure means not ready
            return "database unreachable"
        return None if current else "database migrations are not current; run `appliance db upgrade`"

    def describe(self) -> str:
        """The database URL for people and logs: no user, password or query string (where a
        password may also sit), e.g. ``postgresql+psycopg://db.internal:5432/appliance``."""
        url = self._engine.url
        bare = URL.create(url.drivername, host=url.host, port=url.port, database=url.database)
        return bare.render_as_string(hide_password=False)

    def enable_row_level_security(self, app_role: str | None = None) -> list[str]:
        """PostgreSQL: switch on the tenant walls (``db/tenancy.py``); with ``app_role``, grant
        the application's role its table rights. Run as the tables' owner. -> the tables walled."""
        with self._engine.begin() as conn:
            return tenancy.enable_row_level_security(conn, app_role)

    def close(self) -> None:
        self._engine.dispose()


def open_schema(settings: Settings) -> DatabaseSchema:
    """The schema of the configured database alone (no master key, no other service)."""
    return DatabaseSchema(make_engine(settings.database_url, echo=settings.database.echo))
