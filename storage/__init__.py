"""The store: SQLModel tables, the engine and transactions, migrations, and every SQL statement, by concern."""
