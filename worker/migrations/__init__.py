"""Alembic migrations for the ledger. Applied by `worker.ledger.Ledger.migrate()`."""
