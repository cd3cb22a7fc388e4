"""Alembic migrations: the only way dxf-bridge's schema is created or changed."""
