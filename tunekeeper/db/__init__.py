"""The database: tables, the JobStore (every query lives there) and Alembic migrations."""
