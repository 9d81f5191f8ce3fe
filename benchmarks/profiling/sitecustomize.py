"""cProfile inside a gateway worker, on signals: imported at start-up by a Python that has this
directory on ``PYTHONPATH`` and ``OWB_CPROFILE`` set (``profile_gateway.py --tool cprofile``).

``serve`` is a master over a worker; the master replaces itself (``execv``, isolated mode: no
``PYTHONPATH``), so ``python -m cProfile`` would profile nothing that serves. The worker, a fresh
Python, loads this file: SIGUSR1 starts the profile, SIGUSR2 stops it and writes the stats to the
path in ``OWB_CPROFILE``, so start-up and warm-up stay out of it.
"""
import os
import signal

if os.environ.get("OWB_CPROFILE"):
    import cProfile

    _profiler = cProfile.Profile()

    def _start(*_) -> None:
        _profiler.enable()

    def _stop(*_) -> None:
        _profiler.disable()
        _profiler.dump_stats(os.environ["OWB_CPROFILE"])

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
