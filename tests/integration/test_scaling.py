"""Scaling out: ``gunicorn -w 4 -k ouistiti_gw.worker.GatewayWorker`` on one docroot.

200 concurrent clients each send numbered messages to the contrib echo server (started with
``-P``, the gateway configured through the environment with OUISTITI_GW_PROXY_PROTOCOL=v2); none
is lost or reordered, and the sessions were spread over more than one worker process (counted
from the ``[pid]`` of the "session closed" lines GatewayWorker writes to gunicorn's error log).
"""
import asyncio
import re

import pytest

from support import wait_until
from support.addresses import free_port
from support.clients import all_clients, raise_fd_limit
from support.processes import gunicorn

pytestmark = pytest.mark.gunicorn

CLIENTS = 200
MESSAGES = 50
WORKERS = 4


def test_four_workers_two_hundred_clients(docroot, sample):
    raise_fd_limit(4 * CLIENTS + 100)
    sample("echo", "-P", "-m", "512")
    env = {"OUISTITI_GW_DOCROOT": docroot, "OUISTITI_GW_PROXY_PROTOCOL": "v2"}
    port = free_port()
    with gunicorn("ouistiti_gw.worker.GatewayWorker", port, env, "-w", str(WORKERS), "--log-level", "info") as server:
        # all workers up first: the first one alone would otherwise take every client
        wait_until(lambda: server.log().count("gateway worker") >= WORKERS, what=f"{WORKERS} workers serving")
        results = asyncio.run(all_clients(f"ws://127.0.0.1:{port}/echo", CLIENTS, MESSAGES))
        for client, lines in enumerate(results):
            assert lines == [f"{client}:{i}" for i in range(MESSAGES)]
        served = wait_until(lambda: len(ended := re.findall(r"\[(\d+)\] \[INFO\] session closed name=echo",
                                                            server.log())) == CLIENTS and ended,
                            what=f"{CLIENTS} sessions' close lines")
        assert len(set(served)) > 1, f"all sessions in one worker: {set(served)}"
