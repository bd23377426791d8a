"""The PostgreSQL side: migrations from ``ddl/``, partition management, maintenance, stats."""
