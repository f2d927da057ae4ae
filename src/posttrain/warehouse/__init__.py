"""The warehouse: one DuckDB file, its numbered migrations, and the queries over it."""

from posttrain.warehouse.connection import connect
from posttrain.warehouse.schema import applied_migrations, migrate

__all__ = ["applied_migrations", "connect", "migrate"]
