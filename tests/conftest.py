"""Thin on purpose: the fixtures live in fix_*.py modules, one per service."""

pytest_plugins = [
    "tests.fix_services",
    "tests.fix_pg",
    "tests.fix_kafka",
]
