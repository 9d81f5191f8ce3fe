"""What the tests of the sans-I/O protocol core share."""
from __future__ import annotations

from typing import Any

import pytest

from ouistiti_gw.core.frames import ProtocolViolation


def violation_of(protocol: Any, data: bytes) -> ProtocolViolation:
    """The :class:`~ouistiti_gw.core.frames.ProtocolViolation` a sans-I/O ``Protocol`` raises on
    ``data`` (fed at once, every event taken); after it, nothing more is parsed."""
    protocol.receive_data(data)
    with pytest.raises(ProtocolViolation) as raised:
        while protocol.next_event() is not None:
            pass
    assert not protocol.receiving
    return raised.value
