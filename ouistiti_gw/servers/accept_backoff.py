"""A listening socket out of file descriptors: one warning line and a pause, not tracebacks.

On Linux ``accept()`` takes a free descriptor before it looks for a waiting client, so a process
at its ``RLIMIT_NOFILE`` gets ``EMFILE`` from every accept, even with nobody waiting. gevent's
server loop then prints a traceback each time and pauses accepting. :class:`QuietAccept` pauses
the same way (clients wait in the backlog until sessions end and free descriptors) and says so in
one warning line per shortage, not a traceback per attempt.
"""
from __future__ import annotations

import errno
import logging

log = logging.getLogger(__name__)

#: How long accepting pauses when there is no descriptor to accept with.
PAUSE_SECONDS = 0.1
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


class QuietAccept:
    """Mixin for a gevent ``StreamServer`` (``pywsgi.WSGIServer``, gunicorn's ``PyWSGIServer``)."""

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
