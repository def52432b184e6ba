"""PostgreSQL: migrations and one query module per table group."""
