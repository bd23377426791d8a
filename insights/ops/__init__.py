"""PostgreSQL operations: WAL archive and point-in-time recovery (pgBackRest), pg_cron jobs,
read routing, failover and CDC resync, and the health checks ``insights status`` shows.

Runbooks: docs/runbooks.md.
"""
