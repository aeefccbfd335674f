"""Each agent role as its own grpc.aio server: health, reflection, limits, request-id logging, graceful stop.
Import the modules themselves (``judgeopt.services.server``); this package imports nothing."""
