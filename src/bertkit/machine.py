"""Facts about the machine that are read before torch loads: the CPUs this process may use, whether
other work keeps them busy, and, from those, how idle OpenMP threads should wait.

OpenMP threads that finish their share of a parallel region wait for the next one. libgomp lets them spin
for a while (fast when the process has the cores to itself: a tiny BERT step 25% faster than with sleeping
threads) or sleep at once (OMP_WAIT_POLICY=PASSIVE). When two runs share the cores, spinning threads burn
the time slices the other run's threads need, and each parallel region waits out a scheduler slice: two
pre-training runs on 2 cores each ran 5x slower than alone, some logging windows 60x (BENCHMARKS.md, "Two
runs at once"). So: spin where the machine is quiet, sleep where it is not. This must be decided before
torch loads OpenMP, hence no torch here.
"""

from __future__ import annotations

import os
import time


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def busy_cpus(samples: int = 5) -> int:
    """How many threads other than this one are running right now (the least of a few readings of
    /proc/loadavg's runnable count, minus this process); 0 where it cannot be read."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(0.01)
    return max(0, min(counts) - 1)


def choose_wait_policy(environ=os.environ) -> str | None:
    """Set OMP_WAIT_POLICY=PASSIVE when other threads already run on this process's CPUs (unless the user
    set a policy); returns the policy set, or None where OpenMP's own default stands."""
    if "OMP_WAIT_POLICY" in environ or busy_cpus() < 1:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"
