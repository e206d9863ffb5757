"""The one module of `aether_hub` that imports the generated package.

Everything else in the Hub imports generated
names from here, so that re-vendoring or renaming `aether_api` touches one file.
"""

from aether_api import descriptors as descriptors
from aether_api import runtime as runtime
from aether_api.grpc.health.v1 import messages as health_pb
from aether_api.grpc.health.v1 import server as health_server
from aether_api.grpc.reflection.v1 import messages as reflection_v1_pb
from aether_api.grpc.reflection.v1 import server as reflection_v1_server
from aether_api.grpc.reflection.v1alpha import messages as reflection_v1alpha_pb
from aether_api.grpc.reflection.v1alpha import server as reflection_v1alpha_server
from aether_api.v1 import client as client
from aether_api.v1 import messages as pb
from aether_api.v1 import models as models
from aether_api.v1 import server as server

__all__ = (
    "client",
    "descriptors",
    "health_pb",
    "health_server",
    "models",
    "pb",
    "reflection_v1_pb",
    "reflection_v1_server",
    "reflection_v1alpha_pb",
    "reflection_v1alpha_server",
    "runtime",
    "server",
)
