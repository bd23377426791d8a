"""The schema-registry client loads only in a process that uses a registry (streams/serde/registry.py).

Its package (HTTP stack included) was ~22 MB of every consumer's RSS and 0.1 s of its
start-up, for the default single-object encoding that never talks to a registry (issue 17:
RSS per process).
"""

from __future__ import annotations

import subprocess
import sys

from core.paths import REPO_ROOT

PROBE = """
import sys
import insights.cli.main, consumers.registry, streams.cdc.reader, streams.contracts.registry
from core.settings import load_settings
from streams.serde import make_deserializer, make_serializer
settings = load_settings()
serializer = make_serializer(settings, "product_scraped"); make_deserializer(settings, "product_scraped")
print(type(serializer).__name__, sorted(m for m in sys.modules if m.startswith("confluent_kafka.schema_registry")))
"""


def _loaded(env_extra: dict[str, str]) -> str:
    """The serializer a fresh process makes, and the registry-client modules it then holds."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env_extra}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_process_without_a_registry_never_imports_the_client() -> None:
    assert _loaded({}) == "SingleObjectSerializer []"


def test_a_registry_serde_imports_it_and_works() -> None:
    out = _loaded({"INSIGHTS_SCHEMA_REGISTRY_URL": "mock://lazy"})
    assert out.startswith("RegistrySerializer ") and "'confluent_kafka.schema_registry'" in out
