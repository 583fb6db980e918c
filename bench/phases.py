"""Foreign-load sampling per phase of ``eval_throughput.py``, and its log.

Each phase of the benchmark runs under an ``engine.perf.ForeignLoad``
window; a phase during which other processes used more than the threshold
of cores is flagged in the report, since its figures are not trustworthy.
"""

from __future__ import annotations

import resource
import sys
import time


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the table or the JSON)."""
    print(f"[eval_throughput] {message}", file=sys.stderr, flush=True)


def own_and_children_cpu() -> float:
    """CPU seconds of this process and its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Phases:
    """Foreign-load sampling per measurement phase.

    With ``wait_quiet_s > 0`` each phase first waits, up to that many
    seconds, for a 2-second window whose other load is under the threshold
    (on a shared machine a test run elsewhere can last minutes).
    """

    QUIET_WINDOW_S = 2.0

    def __init__(self, threshold_cores: float, wait_quiet_s: float = 0.0) -> None:
        self.threshold = threshold_cores
        self.wait_quiet_s = wait_quiet_s
        self.phases: dict[str, dict] = {}

    def _foreign_cores(self, seconds: float) -> float:
        from engine.perf import ForeignLoad

        window = ForeignLoad(self_cpu=own_and_children_cpu).start()
        time.sleep(seconds)
        return window.stop() * window.cpu_count

    def _wait_for_quiet(self, name: str) -> float:
        """Seconds spent waiting for a quiet window (0 when not asked)."""
        if self.wait_quiet_s <= 0:
            return 0.0
        started = time.monotonic()
        while self._foreign_cores(self.QUIET_WINDOW_S) > self.threshold:
            if time.monotonic() - started >= self.wait_quiet_s:
                log(
                    f"machine still busy after {self.wait_quiet_s:.0f} s; "
                    f"measuring '{name}' anyway"
                )
                break
        return time.monotonic() - started

    def measure(self, name: str, fn):
        """Run ``fn`` under a ``ForeignLoad`` window and record the load."""
        from engine.perf import ForeignLoad

        waited = self._wait_for_quiet(name)
        window = ForeignLoad(self_cpu=own_and_children_cpu)
        window.start()
        started = time.perf_counter()
        try:
            return fn()
        finally:
            fraction = window.stop()
            cores = fraction * window.cpu_count
            self.phases[name] = {
                "foreign_cores": round(cores, 3),
                "foreign_fraction": round(fraction, 4),
                "wall_s": round(time.perf_counter() - started, 2),
                "waited_for_quiet_s": round(waited, 1),
            }
            if cores > self.threshold:
                log(
                    f"WARNING: {cores:.2f} cores of other load during '{name}' "
                    f"(threshold {self.threshold}); its figures are not trustworthy"
                )

    def summary(self) -> dict:
        """Per-phase figures, the worst phase and the contaminated flag."""
        worst = max((p["foreign_cores"] for p in self.phases.values()), default=0.0)
        flagged = [
            n for n, p in self.phases.items() if p["foreign_cores"] > self.threshold
        ]
        return {
            "threshold_cores": self.threshold,
            "max_foreign_cores": worst,
            "contaminated": bool(flagged),
            "contaminated_phases": flagged,
            "phases": self.phases,
        }
