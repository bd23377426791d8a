"""The consumer tests' fixtures (event topics, rules), shared by the replay tests."""

from tests.consumers.conftest import make_event_topics, seed_rule, topics  # noqa: F401 - fixtures
