"""The central database of a chain: every kiosk's visits and checks in PostgreSQL.

Shared by ``kiosk-collect`` (which writes it) and ``kiosk-report`` / the web page (which read
it): the schema (:mod:`.schema`), its Alembic migrations (:mod:`.migrate`), the writes
(:mod:`.write`) and the report queries (:mod:`.query`). Needs the ``central`` extra.
"""
