"""IP addresses in text form (ouistiti_gw.core.addresses): a dual-stack socket's mapped IPv4 as plain IPv4."""
import pytest

from ouistiti_gw.core.addresses import unmap


@pytest.mark.parametrize(("host", "plain"), [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("::FFFF:c000:201", "192.0.2.1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("::1", "::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("192.0.2.1%eth0", "192.0.2.1"),
    ("unknown", "unknown"),        # not an address: as it is
    ("192.0.2.001", "192.0.2.001"),
    ("[::1]", "[::1]"),
    ("", ""),
])
def test_unmap(host, plain):
    assert unmap(host) == plain
