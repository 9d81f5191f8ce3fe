"""When a server accepts: a few connections per turn of the event loop, and, out of file
descriptors, a pause with one warning line instead of a traceback per attempt.

**A storm of new connections must not take the loop from the sessions already open.** gevent's
server accepts up to 100 connections each time the listening socket is readable, spawning a
handler for each; the loop then runs those handlers' whole handshakes (parse, checks, the UNIX
connect, the 101: a fraction of a millisecond each) before it polls the established sessions'
sockets again, so every open session waits for up to 100 handshakes (``benchmarks/PROFILE.md``,
"A session's life"). :class:`PacedAccept` takes :data:`ACCEPTS_PER_TURN` at most: the
listening socket is one more socket that gets its turn, as a session's pump yields after a
bounded number of reads (:mod:`ouistiti_gw.green.sockio`). Clients past that wait in the listen
backlog (the ``backlog`` option) until the next turn, which comes as soon as the loop has served
what was ready; past ``max_connections`` they get a quick 503.

**Out of descriptors**: on Linux ``accept()`` takes a free descriptor before it looks for a
waiting client, so a process at its ``RLIMIT_NOFILE`` gets ``EMFILE`` from every accept, even
with nobody waiting. gevent's server loop then prints a traceback each time and pauses
accepting. :class:`PacedAccept` pauses the same way (clients wait in the backlog until sessions
end and free descriptors) and says so in one warning line per shortage.
"""
from __future__ import annotations

import errno
import logging

log = logging.getLogger(__name__)

#: Connections accepted each time the listening socket is readable (each turn of the loop).
ACCEPTS_PER_TURN = 2
#: How long accepting pauses when there is no descriptor to accept with.
PAUSE_SECONDS = 0.1
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


class PacedAccept:
    """Mixin for a gevent ``StreamServer`` (``pywsgi.WSGIServer``, gunicorn's ``PyWSGIServer``).

    gevent reads ``max_accept`` as the number of accepts per readable event; its ``pywsgi``
    lowers it to 1 in a multi-process server, which stays (1 is fewer still)."""

    max_accept = ACCEPTS_PER_TURN
    _out_of_descriptors = False

    def do_read(self):
        try:
            accepted = super().do_read()
        except OSError as error:
            if error.errno not in _OUT_OF_DESCRIPTORS:
                raise
            if not self._out_of_descriptors:
                log.warning("cannot accept connections: %s; new clients wait until sessions end", error.strerror)
                self._out_of_descriptors = True
            self.stop_accepting()  # as gevent's own loop does after an error, without the traceback
            self._timer = self.loop.timer(PAUSE_SECONDS)
            self._timer.start(self._start_accepting_if_started)
            return None
        if accepted:
            self._out_of_descriptors = False
        return accepted
