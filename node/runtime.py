"""Process-wide settings of derivnet's long-running processes.

``tune_gc`` is called once by the devnet, the replica and the embedded L1
process after start-up, and by ``scripts/bench`` before it measures (so the
benchmark settles the way the node does).
"""

from __future__ import annotations

import gc

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


__all__ = ["GEN0_THRESHOLD", "tune_gc"]
