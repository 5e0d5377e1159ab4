"""The store: SQLModel tables, the engine and session factory, the SQL the weekly run needs, migrations."""
