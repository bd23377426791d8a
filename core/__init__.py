"""The base layer: settings per concern, the error tree, the event models, repository paths.

Everything else (``streams``, ``consumers``, ``insights``) may import from here; this
package imports nothing of the project above it (``tests/unit/test_layers.py``).
"""
