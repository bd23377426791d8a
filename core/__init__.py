"""The base layer: settings per concern, the error tree, the event models, repository paths.

Everything else (``streams``, ``consumers``, ``insights``) may import from here; this
package imports nothing of the project above it (``tests/unit/test_layers.py``).
"""

#: the version of the whole distribution (all four packages); pyproject.toml says the same
__version__ = "0.1.0"
