"""``gunicorn -k ouistiti_gw.worker.GatewayWorker``: the worker's documented path (the class lives
in :mod:`ouistiti_gw.servers.worker`)."""
from .servers.worker import GatewayWorker

__all__ = ["GatewayWorker"]
