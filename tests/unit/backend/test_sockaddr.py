"""The client's address in ouistiti's handover wire format: a C ``struct sockaddr``, both ways."""
import pytest

from ouistiti_gw.backend.handover import decode_sockaddr, encode_sockaddr


@pytest.mark.parametrize("address", [("127.0.0.1", 8080), ("10.1.2.3", 1), ("::1", 443), ("fe80::1", 65535)])
def test_sockaddr_round_trip(address):
    raw = encode_sockaddr(address)
    assert len(raw) == (16 if "." in address[0] else 28)  # sizeof(sockaddr_in), sizeof(sockaddr_in6)
    assert decode_sockaddr(raw) == address
