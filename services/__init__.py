"""Each agent role as its own grpc.aio server: health, reflection, limits, request-id logging, graceful stop."""

from services.config import ServiceConfig
from services.server import build_server, serve

__all__ = ["ServiceConfig", "build_server", "serve"]
