"""Alembic environment: the URL comes from the caller (storage.migrate), never from a config file."""

from alembic import context

import storage.models  # noqa: F401  (registers the tables)
from sqlmodel import SQLModel
from storage.db import make_engine

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
