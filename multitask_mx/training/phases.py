"""Where a command's wall time goes: named phases, each logged once, summed at the end.

``switch(name)`` ends the phase in progress and starts ``name`` (one line per boundary in
the command's code, no re-indenting); ``phase(name)`` does the same for a ``with`` block.
A phase that comes back (the training loop, validation and checkpoint of each epoch) adds
to its total; its first time is logged at INFO, later ones at DEBUG. ``finish()`` logs one
summary line: the process's start-up (interpreter and imports, from the process's own start
time), every phase's total, and the whole process's age. Each phase's line also gives the
process's CPU seconds in it (all its threads): on a machine shared with other work the wall
time stretches, the CPU time much less.
"""
import logging
import os
import time

_logger = logging.getLogger(__name__)
STARTUP = "start-up (interpreter and imports)"


def process_age():
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started / float(os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError):
        return None


class Phases:
    """Totals of named phases in the order they first ran."""

    def __init__(self):
        self.totals, self.counts = {}, {}
        self.current, self.since, self.cpu_since = None, None, None

    def start(self):
        """Begin timing: the process's age so far is the start-up phase."""
        self.__init__()
        age = process_age()
        if age is not None:
            self._add(STARTUP, age, time.process_time())

    def switch(self, name):
        """End the phase in progress (if any) and start ``name``."""
        self.stop()
        self.current, self.since, self.cpu_since = name, time.perf_counter(), time.process_time()

    def stop(self):
        """End the phase in progress without starting another."""
        if self.current is not None:
            self._add(self.current, time.perf_counter() - self.since, time.process_time() - self.cpu_since)
        self.current = None

    def _add(self, name, seconds, cpu_seconds):
        self.totals[name] = self.totals.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1
        level = logging.INFO if self.counts[name] == 1 else logging.DEBUG
        _logger.log(level, "phase %s: %.1f s (CPU %.1f s)", name, seconds, cpu_seconds)

    def summary(self):
        """'name N.N s (xK), ...; process N.N s' over everything timed so far."""
        parts = ["%s %.1f s%s" % (name, total, " (x%d)" % self.counts[name] if self.counts[name] > 1 else "")
                 for name, total in self.totals.items()]
        age = process_age()
        return ", ".join(parts) + ("; whole process so far %.1f s" % age if age is not None else "")

    def finish(self):
        """End the phase in progress and log the summary; returns {name: seconds}."""
        self.stop()
        _logger.info("phases: %s", self.summary())
        return dict(self.totals)


_PHASES = Phases()
start, switch, stop, finish = _PHASES.start, _PHASES.switch, _PHASES.stop, _PHASES.finish
