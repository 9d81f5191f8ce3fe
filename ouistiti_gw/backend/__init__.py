"""The server side: what a UNIX server written in Python imports to serve the gateway's clients.

Everything is importable from here (``from ouistiti_gw.backend import adopt``): taking a client in
direct mode (:func:`accept`, :func:`adopt`, :class:`DirectClient`), who the client is
(:func:`client_address`, :func:`client_user`, :func:`proxy_header_of`, :func:`read_proxy_header`), whole
``SOCK_SEQPACKET`` packets (:func:`recv_packet`, :func:`max_packet_size`,
:func:`enlarge_send_buffer`), and the socket path's rules (:func:`fits_sun_path`,
:func:`connect_unix`, :class:`BackendUnavailable`). The sample servers in ``contrib/`` import
nothing else of the package.
"""
from ..core.proxy_protocol import ProxyHeader, ProxyProtocolError
from ..green.unix import (
    MAX_SOCKET_PATH_BYTES,
    BackendUnavailable,
    connect_unix,
    enlarge_send_buffer,
    fits_sun_path,
    max_packet_size,
    recv_packet,
)
from .direct import DirectClient, accept, adopt, client_address, client_user, proxy_header_of
from .proxy_header import read_proxy_header

__all__ = [
    "MAX_SOCKET_PATH_BYTES", "BackendUnavailable", "DirectClient", "ProxyHeader", "ProxyProtocolError", "accept",
    "adopt", "client_address", "client_user", "connect_unix", "enlarge_send_buffer", "fits_sun_path", "max_packet_size",
    "proxy_header_of", "read_proxy_header", "recv_packet",
]
