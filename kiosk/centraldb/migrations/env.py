"""Alembic environment: migrations run on the connection that migrate.upgrade() passes."""

from alembic import context

from kiosk.centraldb.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` on the command line: -x url=postgresql+psycopg://...
    from sqlalchemy import create_engine

    url = context.get_x_argument(as_dictionary=True)["url"]
    with create_engine(url).begin() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
