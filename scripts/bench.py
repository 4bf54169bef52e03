"""derivnet benchmarks (run through scripts/bench).

1. In-process settlement: the tape repeated to >= 100,000 fills, signed up
   front, then applied through the STF with a Merkle root per block; prints
   fills/s (signature checks included: every fill carries two new orders).
2. JSON-RPC: a devnet process on free ports; pre-signed maker/taker order
   pairs sent in JSON-RPC batch requests; prints orders/s.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.crypto import ZERO_HASH  # noqa: E402
from node.db import MemoryDB  # noqa: E402
from node.eip712 import Domain  # noqa: E402
from node.genesis import load_genesis  # noqa: E402
from node.replay import read_tape  # noqa: E402
from node.sigverify import Prefetcher, clear_memo, fill_signatures  # noqa: E402
from node.signing import Signer, dev_keys  # noqa: E402
from node.smt import SparseMerkleTree  # noqa: E402
from node.state import State  # noqa: E402
from node.stf import apply_transaction  # noqa: E402
from node.transactions import Deposit, Fill, Order  # noqa: E402

TAPE = ROOT.parent / "shared" / "data" / "ethusdt-trades-2023-02-02.csv"
EXPIRY = 2**40


def signed_fills(domain: Domain, count: int, takers: int = 4) -> tuple[list[Fill], list[Signer]]:
    """``count`` fills following the tape (repeated), maker = dev account 3."""
    keys = dev_keys(10)
    maker = Signer(keys[3])
    taker_signers = [Signer(keys[4 + i]) for i in range(takers)]
    tape = read_tape(str(TAPE), 2, 4)
    fills = []
    for i in range(count):
        t = tape[i % len(tape)]
        taker = taker_signers[i % takers]
        m = Order(maker.address, 1, not t.taker_buys, t.price, t.size, 2 * i, EXPIRY)
        k = Order(taker.address, 1, t.taker_buys, t.price, t.size, 2 * i + 1, EXPIRY)
        fills.append(Fill(m, maker.sign_order(domain, m)[1], k, taker.sign_order(domain, k)[1],
                          t.size, t.price))
    return fills, [maker, *taker_signers]


def bench_stf(fills_target: int, block_fills: int, workers: int) -> float:
    genesis = load_genesis()
    domain = Domain(genesis.l2_chain_id, bytes.fromhex("e7f1725E7734CE288F8367e1Bb143E90bb3F0512"))
    t0 = time.perf_counter()
    fills, accounts = signed_fills(domain, fills_target)
    print(f"signed {len(fills):,} fills in {time.perf_counter() - t0:.1f} s (not timed)")
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
    for i, who in enumerate(accounts):
        apply_transaction(state, Deposit(i, who.address, 10**15), 0, domain)
    state.commit()
    now = 1_700_000_000
    clear_memo()
    blocks = [fills[i:i + block_fills] for i in range(0, len(fills), block_fills)]
    prefetcher = Prefetcher(workers) if workers else None
    if prefetcher is not None:  # warm the worker processes up (not timed)
        Prefetcher.collect(prefetcher.submit([(b"\x00" * 32, b"\x00" * 65)] * workers))
    gc.collect()
    t0 = time.perf_counter()
    jobs = prefetcher.submit(fill_signatures(domain, blocks[0])) if prefetcher else []
    for k, block in enumerate(blocks):
        if prefetcher is not None:
            Prefetcher.collect(jobs)  # signatures of block k are in the memo
            if k + 1 < len(blocks):  # recover block k+1 while block k executes
                jobs = prefetcher.submit(fill_signatures(domain, blocks[k + 1]))
        for f in block:
            apply_transaction(state, f, now, domain)
        state.commit()
    dt = time.perf_counter() - t0
    if prefetcher is not None:
        prefetcher.close()
    rate = len(fills) / dt
    how = f"signatures recovered on {workers} worker processes" if workers else "serial"
    print(f"STF + Merkle root per block ({how}): {len(fills):,} fills in {len(blocks)} "
          f"blocks of {block_fills} in {dt:.2f} s = {rate:,.0f} fills/s")
    return rate


def bench_rpc(pairs: int, batch: int) -> float:
    import tempfile

    from l1_stub.client import connect
    from node.client import L2Client, order_params
    from node.replay import MAKER_FUNDING, fund_accounts
    sys.path.insert(0, str(ROOT / "tests"))
    from devnet_process import DevnetProcess  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        node = DevnetProcess(None, Path(tmp) / "devnet.log",
                             **{"--block-time": "0.25", "--batch-interval": "2"})
        node.start()
        try:
            with L2Client(node.url) as client, connect(node.l1_url) as w3:
                fills, accounts = signed_fills(client.domain, pairs)
                fund_accounts(client, w3, [(a, MAKER_FUNDING) for a in accounts], 120)
                requests = []
                for f in fills:
                    requests.append(("l2_sendOrder", [order_params(f.maker, f.maker_signature)]))
                    requests.append(("l2_sendOrder",
                                     [order_params(f.taker, f.taker_signature, "IOC")]))
                t0 = time.perf_counter()
                errors = 0
                for i in range(0, len(requests), batch):
                    for r in client.batch(requests[i:i + batch]):
                        errors += isinstance(r, Exception)
                dt = time.perf_counter() - t0
        finally:
            node.stop()
    rate = len(requests) / dt
    print(f"JSON-RPC l2_sendOrder: {len(requests):,} orders ({pairs:,} fills) in batches of "
          f"{batch} in {dt:.2f} s = {rate:,.0f} orders/s ({errors} errors)")
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fills", type=int, default=100_000)
    p.add_argument("--block-fills", type=int, default=2_500,
                   help="fills per block (2,500 = 10,000 fills/s at 250 ms blocks)")
    p.add_argument("--rpc-pairs", type=int, default=10_000)
    p.add_argument("--rpc-batch", type=int, default=200)
    p.add_argument("--workers", type=int, default=2,
                   help="signature-recovery processes (0: recover serially in the STF)")
    p.add_argument("--skip-rpc", action="store_true")
    a = p.parse_args()
    bench_stf(a.fills, a.block_fills, 0)
    if a.workers:
        bench_stf(a.fills, a.block_fills, a.workers)
    if not a.skip_rpc:
        bench_rpc(a.rpc_pairs, a.rpc_batch)


if __name__ == "__main__":
    main()
