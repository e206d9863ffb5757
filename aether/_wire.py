"""The one module of `aether` that imports the generated package.

Everything else in `aether` imports generated names from here, so that re-vendoring or
renaming `aether_api` touches one file. (The Hub, `aether_hub`, has its own door.)
"""

from aether_api import model_base as model_base
from aether_api import runtime as runtime
from aether_api.v1 import client as client
from aether_api.v1 import messages as pb
from aether_api.v1 import models as models

__all__ = (
    "client",
    "model_base",
    "models",
    "pb",
    "runtime",
)
