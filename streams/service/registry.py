"""One Prometheus registry per process, with the process's own metrics on it.

Not the global default registry: a test process runs several services side by side,
and each must expose only its own series. The process and platform collectors the
default registry would have carried (CPU, memory, open files, Python version, GC) are
registered here instead, so a dashboard sees them for every service.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def process_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry

