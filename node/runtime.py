"""Process-wide settings of derivnet's long-running processes.

``tune_gc`` is called once by the devnet, the replica and the embedded L1
process after start-up, and by ``scripts/bench`` before it measures (so the
benchmark settles the way the node does). ``exit_with_parent`` is the
initializer of every worker process pool, so a node killed with SIGKILL
leaves no orphaned workers behind.
"""

from __future__ import annotations

import gc
import os
import threading
import time

# CPython's default first-generation threshold is 700 allocations. The STF,
# the Merkle tree and py-evm allocate millions of short-lived objects that
# reference counting frees anyway, so the collector mostly rescans live
# ones: 50,000 cut ~9% of the CPU of in-process settlement (scripts/bench
# section 1, 20,000 fills between 10,000 traders, 2,570-2,669 -> 2,815-2,897
# fills per CPU-second). Cycles are still collected, only less often.
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Move every object alive now (modules, contracts, genesis) out of the
    collector's view (``gc.freeze``) and collect young objects every
    ``GEN0_THRESHOLD`` allocations instead of 700. Idempotent."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


# how often a worker process checks that its parent is still alive (s)
PARENT_POLL_S = 0.5


def exit_with_parent(parent: int) -> None:
    """Initializer of a worker process pool
    (``ProcessPoolExecutor(initializer=exit_with_parent, initargs=(os.getpid(),))``):
    a daemon thread ends this worker (``os._exit``) within ``PARENT_POLL_S``
    seconds of process ``parent`` going away, however it went (kill -9
    included: the orphan is re-parented). Without it a killed node leaves its
    workers and multiprocessing's resource tracker behind: forked workers
    keep their own copies of the pool's pipes open, so they never see
    end-of-file. (``prctl(PR_SET_PDEATHSIG)`` is not used: it fires when the
    *thread* that started the worker exits, and a pool starts workers from
    whichever thread submits.)"""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


__all__ = ["GEN0_THRESHOLD", "PARENT_POLL_S", "exit_with_parent", "tune_gc"]


def find_exception(exc: BaseException, kind: type[BaseException], *,
                   only: bool = False) -> BaseException | None:
    """``exc`` itself if it is a ``kind``, else the first ``kind`` inside its
    (nested) exception groups, as trio's nurseries deliver errors; None if
    there is none, or with ``only`` if the groups also hold anything else."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(kind)
        if only and rest is not None:
            return None
        while isinstance(match, BaseExceptionGroup):
            match = match.exceptions[0]
        return match
    return None
