"""The Aether code generator: protos → typed IR → Jinja templates → ruff-formatted Python.

Run it as ``python -m codegen`` (see ``docs/codegen.md``).
"""

GENERATOR_VERSION = "1.0.1"
"""Version of the generator, written into every file header; bump when output changes."""
