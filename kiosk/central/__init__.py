"""kiosk-collect: the central service that writes every kiosk's visits and checks to
PostgreSQL (docs/central.md). Needs the ``central`` extra (psycopg 3, Alembic)."""
