"""Alembic environment: the URL comes from the caller (storage.migrate), never from a config file.

On SQLite a migration that changes a table's constraints rebuilds the table (copy, drop, rename), and
with foreign keys on, dropping a table that other rows point at fails. So foreign keys are off while
migrations run — the pragma only takes effect outside a transaction, hence before it begins — and
`PRAGMA foreign_key_check` runs before the commit: a migration that broke a reference rolls back.
"""

from alembic import context
from sqlalchemy import text

import storage.models  # noqa: F401  (registers the tables)
from sqlmodel import SQLModel
from storage.db import make_engine

target_metadata = SQLModel.metadata


class ForeignKeyViolation(RuntimeError):
    pass


def run_migrations_online() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise ForeignKeyViolation(f"migration left rows pointing at nothing: {broken[:5]}")
    engine.dispose()


run_migrations_online()
