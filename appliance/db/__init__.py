"""Database layer: typed SQLAlchemy 2 models, engines and Alembic migrations (shipped in the package)."""
