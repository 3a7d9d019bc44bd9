"""Database: SQLAlchemy 2 engine and sessions, typed models, Alembic migrations."""
