"""The L1's batch capacity (issue 6 item 6): full batches of fills posted
back to back to a bare L1 process (``l1_stub.process.L1Process``, as the
devnet runs it), one batch per L1 block, mined as soon as it is sent.

``run(batches)`` reports the gas of one full ``submitBatch``, wall and L1
child CPU milliseconds per batch (CPU from /proc/PID/stat: on a shared
machine the CPU figure is the one to compare) and the fills/s cap they
give, with the load average. Run alone: ``python scripts/bench_l1.py [N]``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l1_stub.client import RollupClient, deploy, wait_receipt  # noqa: E402
from l1_stub.process import L1Process  # noqa: E402
from node.batch import BLOCK_HEADER_BYTES, BatchBlock, encode_batch  # noqa: E402
from node.crypto import keccak  # noqa: E402
from node.transactions import Fill, Order, encode_tx  # noqa: E402

FILL_BYTES = 261
MAX_BATCH_BYTES = 131_072


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fills(n: int, rnd: random.Random) -> list[bytes]:
    # the Rollup does not check signatures: random 65 bytes do
    def sig() -> bytes:
        return rnd.randbytes(64) + bytes([27 + rnd.randrange(2)])

    out = []
    for i in range(n):
        maker = Order(rnd.randbytes(20), 1, True, 350_000 + i, 10_000, i, 2**40)
        taker = Order(rnd.randbytes(20), 1, False, 340_000, 5_000, i + 1, 2**40)
        out.append(encode_tx(Fill(maker, sig(), taker, sig(), 5_000, 350_000 + i)))
    return out


def full_batch(timestamp: int, fills: list[bytes], per_block: int = 50) -> tuple[bytes, int]:
    """As many ``fills`` as fit one batch, ``per_block`` per L2 block stamped
    ``timestamp``: (batch data, fills in it)."""
    blocks: list[BatchBlock] = []
    size = 0
    for i in range(0, len(fills), per_block):
        chunk = fills[i:i + per_block]
        room = (MAX_BATCH_BYTES - size - BLOCK_HEADER_BYTES) // FILL_BYTES
        if room <= 0:
            break
        chunk = chunk[:room]
        blocks.append(BatchBlock(timestamp, 1, tuple(chunk)))
        size += BLOCK_HEADER_BYTES + FILL_BYTES * len(chunk)
    return encode_batch(blocks), sum(len(b.txs) for b in blocks)


def run(batches: int = 10) -> dict[str, Any]:
    """Post ``batches`` full batches (after one warm-up) to a fresh L1 process."""
    rnd = random.Random(6)
    fills = _fills(MAX_BATCH_BYTES // FILL_BYTES, rnd)
    ts = int(time.time()) - 60
    data = [full_batch(ts + k, fills)[0] for k in range(batches + 1)]
    per_batch = full_batch(ts, fills)[1]
    with L1Process(port=0) as l1:
        key, sequencer = l1.dev_keys[0], l1.dev_accounts[0]
        d = deploy(l1.w3, key, sequencer, keccak(b"genesis"), 901, mine=l1.mine)
        rollup = RollupClient(l1.w3, d)

        def post(batch: bytes) -> Any:
            tx = rollup.submit_batch(key, batch, keccak(batch), 0)
            l1.mine()
            return wait_receipt(l1.w3, tx)

        post(data[0])
        cpu0, t0 = _cpu_seconds(l1.pid), time.perf_counter()
        for batch in data[1:]:
            receipt = post(batch)
        cpu, wall = _cpu_seconds(l1.pid) - cpu0, time.perf_counter() - t0
    fills_posted = per_batch * batches
    out = {
        "l1_batch_bytes": len(data[0]),
        "l1_batch_fills": per_batch,
        "l1_batch_gas": int(receipt["gasUsed"]),
        "l1_batch_wall_ms": round(1000 * wall / batches, 1),
        "l1_batch_cpu_ms": round(1000 * cpu / batches, 1),
        "l1_cap_fills_per_s": round(fills_posted / wall),
        "l1_cap_fills_per_cpu_s": round(fills_posted / cpu) if cpu else None,
        "l1_cap_loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"L1 cap: {batches} full batches of {per_batch} fills ({len(data[0]):,} bytes, "
          f"{out['l1_batch_gas']:,} gas each) back to back to a bare L1 process: "
          f"{out['l1_batch_wall_ms']} ms wall, {out['l1_batch_cpu_ms']} ms L1 CPU per batch = "
          f"{out['l1_cap_fills_per_s']:,} fills/s ({out['l1_cap_fills_per_cpu_s']:,} per L1 "
          f"CPU-second; load average {out['l1_cap_loadavg_1m']})")
    return out


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
