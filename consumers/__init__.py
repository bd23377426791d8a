"""The consumer applications that write PostgreSQL: one subpackage per sink."""
