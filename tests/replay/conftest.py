"""The consumer tests' fixtures (event topics, rules), shared by the replay tests."""

from tests.consumers.conftest import make_event_topics, seed_rule, topics  # noqa: F401 - fixtures
from tests.summaries.conftest import cdc_settings  # noqa: F401,E402 - a fixture
