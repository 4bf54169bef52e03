"""derivnet benchmarks (run through scripts/bench); the figures of issues 6 and 7.

1. In-process settlement: fills between ``--accounts`` distinct traders
   (default 10,000; tape prices and sizes), signed up front (not timed), then
   applied through the STF with a Merkle root per block, blocks cut as the
   Rollup's batch limits allow (131,072 bytes incl. the 18-byte block header,
   4,096 steps). fills/s with signature recovery serial in the STF, and with
   ``--workers`` recovery processes pipelined one block ahead (they also
   hash the orders: ``Prefetcher.submit_fills``).
2. End to end: a ``derivnet devnet`` process (L1 in its own child process,
   ``--block-time 0.25``); pre-signed maker (GTC) + taker (IOC) order pairs
   sent over JSON-RPC for ``--duration`` seconds by concurrent client
   PROCESSES, once as JSON-RPC batch requests (``--clients`` processes,
   ``--batch-pairs`` pairs per request) and once as single requests over
   ``--connections`` connections (one process each). Reports fills acked per
   second, fills sealed in L2 blocks during the window, fills on L1 (in
   posted batches, the safe head) by the end of the window, and how long
   after the window the L1 needed to catch up. Before it, the L1's own cap
   (scripts/bench_l1.py): ``--l1-cap-batches`` full batches of fills posted
   back to back to a bare L1 process, gas and wall/CPU ms per batch.
3. Soft-confirmation latency: during each end-to-end run a probe process
   sends a taker order every ``--probe-interval`` s (jittered, on schedule
   whatever the confirmations take) and times it until its fill is in a
   sealed block (polling ``l2_getTransactionReceipt`` from a second
   connection): p50/p99.
4. Peak RSS (VmHWM) of the node process and of its L1 child.
5. Replica derivation: ``--replica-fills`` fills posted as full batches to an
   embedded L1 process, then derived from L1 data alone: in memory
   (``node.derive.derive_chain``) and by a ``Replica`` given only the L1 URL
   (calldata and deposit queue over JSON-RPC, chain stored in LevelDB);
   then, for a fair comparison, in-process settlement (section 1's loop) of
   the same fills between the same ``--replica-accounts`` traders.
6. Disputes (issue 7, scripts/bench_disputes.py): the gas of one
   ``OneStepProver.prove_step`` per transaction type (eth_estimateGas), and
   a whole game over a ``--dispute-steps`` batch (default 1,000) with the
   real prover: each party's L1 transactions and gas.
7. Streams (issue 9, scripts/stream_latency.py): ``--stream-subscribers``
   WebSocket clients (default 100 over 4 processes) on the ``blocks``
   channel of a fresh devnet during a tape replay and steady trading: the
   delay from block seal to receipt (p50/p99) and the block cadence; then the
   same with ``--stream-stalled`` consumers that never read (are they
   dropped, does the cadence change).

``--json`` prints every figure as one JSON object at the end; the plain
output ends with a ``figures`` block (one ``name: value`` per line).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import math
import multiprocessing as mp
import os
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.crypto import ZERO_HASH, keccak  # noqa: E402
from node.db import MemoryDB  # noqa: E402
from node.eip712 import Domain  # noqa: E402
from node.genesis import load_genesis  # noqa: E402
from node.runtime import tune_gc  # noqa: E402
from node.replay import read_tape  # noqa: E402
from node.signing import Signer  # noqa: E402
from node.smt import SparseMerkleTree  # noqa: E402
from node.state import State  # noqa: E402
from node.stf import apply_transaction  # noqa: E402
from node.sigverify import Prefetcher, clear_memo  # noqa: E402
from node.transactions import Deposit, Fill, FundingTick, Order, encode_tx  # noqa: E402

TAPE = ROOT.parent / "shared" / "data" / "ethusdt-trades-2023-02-02.csv"
EXPIRY = 2**40
BLOCK_HEADER_BYTES = 18
MARKET = 1  # ETH-USD: price in cents, size in 0.0001 ETH
PRICE = 166_600  # the genesis oracle price


def rollup_limits() -> tuple[int, int]:
    """(MAX_BATCH_BYTES, MAX_STEPS) of the Rollup contract's source."""
    src = (ROOT / "l1_stub" / "contracts" / "Rollup.vy").read_text()
    get = lambda name: int(re.search(rf"^{name}: .*= (\d+)", src, re.M).group(1))  # noqa: E731
    return get("MAX_BATCH_BYTES"), get("MAX_STEPS")


def trader_key(i: int) -> bytes:
    """Deterministic private key of bench trader ``i`` (never a dev account)."""
    return keccak(b"derivnet-bench-trader" + i.to_bytes(8, "big"))


# ------------------------------------------------------------- in-process

def _sign_chunk(args: tuple[int, bytes, list[tuple[int, int, bool, int, int, int]]]) -> list[bytes]:
    chain_id, rollup, jobs = args
    domain = Domain(chain_id, rollup)
    out = []
    for key_index, _, is_buy, price, size, salt in jobs:
        s = Signer(trader_key(key_index))
        out.append(s.sign_order(domain, Order(s.address, MARKET, is_buy, price, size, salt,
                                              EXPIRY))[1])
    return out


def signed_fills(domain: Domain, count: int, accounts: int,
                 workers: int) -> tuple[list[Fill], list[bytes]]:
    """``count`` fills along the tape (repeated); fill i is between traders
    2i and 2i+1 (mod ``accounts``). Returns (fills, trader addresses)."""
    addresses = [Signer(trader_key(i)).address for i in range(accounts)]
    tape = read_tape(str(TAPE), 2, 4)
    jobs = []
    for i in range(count):
        t = tape[i % len(tape)]
        m, k = (2 * i) % accounts, (2 * i + 1) % accounts
        jobs.append((m, 0, not t.taker_buys, t.price, t.size, i))
        jobs.append((k, 0, t.taker_buys, t.price, t.size, i))
    chunk = 2_000
    parts = [(domain.chain_id, domain.verifying_contract, jobs[i:i + chunk])
             for i in range(0, len(jobs), chunk)]
    if workers > 1 and len(parts) > 1:
        with ProcessPoolExecutor(workers) as pool:
            sigs = [s for part in pool.map(_sign_chunk, parts) for s in part]
    else:
        sigs = [s for part in map(_sign_chunk, parts) for s in part]
    fills = []
    for i in range(count):
        mj, kj = jobs[2 * i], jobs[2 * i + 1]
        m = Order(addresses[mj[0]], MARKET, mj[2], mj[3], mj[4], mj[5], EXPIRY)
        k = Order(addresses[kj[0]], MARKET, kj[2], kj[3], kj[4], kj[5], EXPIRY)
        fills.append(Fill(m, sigs[2 * i], k, sigs[2 * i + 1], mj[4], mj[3]))
    return fills, addresses


def cut_blocks(fills: list[Fill], max_bytes: int, max_steps: int) -> list[list[Fill]]:
    """Consecutive blocks as a block builder that honours the batch limits cuts them."""
    blocks: list[list[Fill]] = [[]]
    size = BLOCK_HEADER_BYTES
    for f in fills:
        n = len(encode_tx(f))
        if blocks[-1] and (size + n > max_bytes or len(blocks[-1]) + 1 > max_steps):
            blocks.append([])
            size = BLOCK_HEADER_BYTES
        blocks[-1].append(f)
        size += n
    return blocks


def bench_stf(fills_target: int, accounts: int, workers_list: list[int]) -> dict[str, Any]:
    genesis = load_genesis()
    domain = Domain(genesis.l2_chain_id, bytes.fromhex("e7f1725E7734CE288F8367e1Bb143E90bb3F0512"))
    max_bytes, max_steps = rollup_limits()
    t0 = time.perf_counter()
    fills, addresses = signed_fills(domain, fills_target, accounts, os.cpu_count() or 1)
    blocks = cut_blocks(fills, max_bytes, max_steps)
    biggest = max(BLOCK_HEADER_BYTES + sum(len(encode_tx(f)) for f in b) for b in blocks)
    print(f"in-process: signed {len(fills):,} fills between {accounts:,} traders in "
          f"{time.perf_counter() - t0:.1f} s (not timed); {len(blocks)} blocks of <= "
          f"{max(len(b) for b in blocks)} fills, largest {biggest:,} bytes "
          f"(batch limits {max_bytes:,} bytes / {max_steps:,} steps)")
    rates: dict[str, Any] = {"fills": len(fills), "accounts": accounts, "blocks": len(blocks),
                             "largest_block_bytes": biggest}
    ticks = funding_ticks(domain, len(blocks))
    for workers in workers_list:
        for funding, risk in ((False, False), (True, False), (True, True)):
            risk_cpu: list[float] = []
            dt, cpu = settle(genesis, domain, addresses, blocks, workers,
                             ticks if funding else None, risk, risk_cpu)
            rate = len(fills) / dt
            how = f"signatures on {workers} worker processes" if workers else "serial signatures"
            how += ", a FundingTick before every block" if funding else ""
            how += ", the risk engine's index and checks after every block" if risk else ""
            print(f"  STF + Merkle root per block, {how}: {len(fills):,} fills in {dt:.2f} s "
                  f"= {rate:,.0f} fills/s ({len(fills) / cpu:,.0f} per CPU-second of this "
                  f"process; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
            key = ("serial" if not workers else f"workers_{workers}") + (
                "_with_funding" if funding else "") + ("_with_risk" if risk else "")
            rates[key] = round(rate)
            rates[f"{key}_per_cpu_s"] = round(len(fills) / cpu)
            if risk:
                share = risk_cpu[0] / len(fills) * 1e6
                rates["risk_cpu_us_per_fill"] = round(share, 1)
                print(f"    of which the risk engine: {share:.1f} us of CPU per fill "
                      f"({risk_cpu[0] / cpu:.1%} of the run's CPU)")
    return rates


FUNDING_STEP_S = 60
"""Seconds between the bench's blocks when it ticks funding."""


def funding_ticks(domain: Domain, blocks: int) -> list[FundingTick]:
    """One FundingTick for MARKET per block (not timed), signed by the
    genesis oracle's dev key (dev account 1), block k's at 1_700_000_000 +
    FUNDING_STEP_S x k with a 500 ppm premium: the first sets the market's
    funding time, each later one moves the index, so a fill of a trader
    seen in an earlier block settles funding."""
    from node.signing import dev_keys

    oracle = Signer(dev_keys(2)[1])
    return [oracle.funding_tick(domain, MARKET, 1_700_000_000 + FUNDING_STEP_S * k, 500)
            for k in range(blocks)]


def settle(genesis: Any, domain: Domain, addresses: list[bytes], blocks: list[list[Fill]],
           workers: int, ticks: list[FundingTick] | None = None,
           risk: bool = False, risk_cpu: list[float] | None = None) -> tuple[float, float]:
    """In-process settlement of ``blocks`` on a fresh state where each of
    ``addresses`` has deposited (not timed): the STF and a Merkle root per
    block, signatures recovered serially in the STF (``workers`` 0) or on
    ``workers`` processes one block ahead. With ``ticks`` (one per block,
    ``funding_ticks``) block k starts with ``ticks[k]`` and has its
    timestamp. With ``risk`` the risk engine's per-block work follows each
    block (sequencer/risk_engine.py ``candidates``: the accounts the block
    touched re-filed in the liquidation index, the index searched for the
    ticked market, then the exact liquidatable check of each candidate).
    Returns (wall s, CPU s of this process); the CPU s of the risk
    engine's share is appended to ``risk_cpu`` if given."""
    tree = SparseMerkleTree(MemoryDB())
    state = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
    for i, who in enumerate(addresses):
        apply_transaction(state, Deposit(i, who, 10**13), 0, domain)
    state.commit()
    clear_memo()
    prefetcher = Prefetcher(workers) if workers else None
    if prefetcher is not None:  # warm the worker processes up (not timed)
        Prefetcher.collect(prefetcher.submit([(b"\x00" * 32, b"\x00" * 65)] * workers))
    gc.collect()
    now = 1_700_000_000
    index = None
    spent = 0.0
    if risk:
        from node.risk import liquidatable
        from sequencer.risk_engine import LiquidationIndex, candidates, unsettled_of

        index = LiquidationIndex()
    t0, cpu0 = time.perf_counter(), time.process_time()
    jobs = prefetcher.submit_fills(domain, blocks[0]) if prefetcher else []
    for k, block in enumerate(blocks):
        if prefetcher is not None:
            Prefetcher.collect_fills(domain, jobs)  # block k's order hashes and signers
            if k + 1 < len(blocks):  # hash and recover block k+1 while block k executes
                jobs = prefetcher.submit_fills(domain, blocks[k + 1])
        if ticks is not None:
            now = ticks[k].timestamp
            apply_transaction(state, ticks[k], now, domain)
        for f in block:
            apply_transaction(state, f, now, domain)
        state.commit()
        if index is not None:
            r0 = time.process_time()
            touched = {a for f in block for a in (f.maker.account, f.taker.account)}
            markets = state.markets
            unsettled = unsettled_of(markets)
            for address in candidates(index, state, touched, {MARKET} if ticks else set()):
                liquidatable(state.account(address), markets, unsettled)
            spent += time.process_time() - r0
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if risk_cpu is not None:
        risk_cpu.append(spent)
    if prefetcher is not None:
        prefetcher.close()
    return dt, cpu


# ------------------------------------------------------------- replica

def bench_replica(fills_target: int, accounts: int, sig_workers: int) -> dict[str, Any]:
    """Replica derivation speed: ``fills_target`` fills between ``accounts``
    traders (deposits from the L1 queue first) posted as full batches to an
    embedded L1 process (not timed), then (1) ``node.derive.derive_chain``
    in memory on the batch data and (2) a ``Replica`` that knows only the L1
    URL reading every batch's calldata and the deposit queue over JSON-RPC,
    deriving and storing the chain in LevelDB (timed: both figures; with
    signature workers they also split and hash each batch and recover its
    signers, the main process executes and stores; the clock stops when the
    last block is written). Per-CPU-second figures: of this process (every
    thread) and of its main thread, whose work is the pipeline's critical
    path; the in-process figure runs on one thread."""
    import shutil
    import tempfile

    from l1_stub.client import RollupClient, deploy, wait_receipt
    from l1_stub.process import L1Process
    from node.batch import BatchBlock, encode_batch
    from node.blocks import genesis_block
    from node.derive import PostedBatch, QueuedDeposit, derive_chain, execute_block
    from node.replica import Replica, ReplicaConfig

    genesis = load_genesis()
    max_bytes, max_steps = rollup_limits()
    tmp = tempfile.mkdtemp(prefix="derivnet-bench-replica-")
    l1 = L1Process(port=0, chain_id=genesis.l1_chain_id)
    try:
        w3 = l1.w3
        key = l1.dev_keys[0]  # the genesis sequencer (and deployer)
        root0 = SparseMerkleTree(MemoryDB()).update(ZERO_HASH, genesis.leaves())
        dep = deploy(w3, key, "0x" + genesis.sequencer.hex(), root0, genesis.l2_chain_id,
                     mine=l1.mine)
        domain = Domain(genesis.l2_chain_id, bytes.fromhex(dep.rollup[2:]))
        rollup = RollupClient(w3, dep)
        t0 = time.perf_counter()
        fills, addresses = signed_fills(domain, fills_target, accounts, os.cpu_count() or 1)
        amount = 10**13
        calls = ([lambda: rollup.faucet(key, amount)] * accounts  # faucet cap: 1e13 a call
                 + [lambda: rollup.approve(key, amount * accounts)]
                 + [lambda who=who: rollup.deposit(key, who, amount) for who in addresses])
        for i in range(0, len(calls), 25):  # py-evm rebuilds a pending block's tries per tx
            sent = [call() for call in calls[i:i + 25]]
            l1.mine()
            for h in sent:
                assert wait_receipt(w3, h, l1.mine)["status"] == 1
        queue = {i: QueuedDeposit(i, who, amount) for i, who in enumerate(addresses)}
        now = int(w3.eth.get_block("latest")["timestamp"])
        deposit_block = BatchBlock(now, 0, tuple(q.tx() for q in queue.values()))
        blocks = [deposit_block] + [
            BatchBlock(now, 0, tuple(encode_tx(f) for f in b))
            for b in cut_blocks(fills, max_bytes, max_steps)]
        # the sequencer's roots: execute once (not timed), then post one batch per block
        tree = SparseMerkleTree(MemoryDB())
        state = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
        parent = genesis_block(state.root).header
        posted = []
        for i, bb in enumerate(blocks):
            parent = execute_block(state, parent, bb, domain).header
            data = encode_batch([bb])
            posted.append(PostedBatch(i, i + 1, data, parent.state_root, keccak(data),
                                      accounts))
        for b in posted:
            h = rollup.submit_batch(key, b.batch_data, b.state_root, b.deposit_end)
            receipt = wait_receipt(w3, h, l1.mine)
            assert receipt["status"] == 1, f"batch {b.index} reverted"
        print(f"replica: {len(fills):,} fills between {accounts:,} traders in {len(posted)} "
              f"batches on L1 (set up in {time.perf_counter() - t0:.1f} s, not timed)")
        out: dict[str, Any] = {"fills": len(fills), "accounts": accounts, "batches": len(posted)}

        clear_memo()
        tree = SparseMerkleTree(MemoryDB())
        state = State(tree, tree.update(ZERO_HASH, genesis.leaves()))
        gc.collect()
        t0 = time.perf_counter()
        derived = derive_chain(state, genesis_block(state.root).header, posted, queue, domain)
        dt = time.perf_counter() - t0
        assert all(d.matches for d in derived)
        out["in_memory_fills_per_s"] = round(len(fills) / dt)
        print(f"  derive_chain in memory (split, commitment and deposit checks, STF, root per "
              f"block): {len(fills):,} fills in {dt:.2f} s = "
              f"{out['in_memory_fills_per_s']:,} fills/s (load average {os.getloadavg()[0]:.1f})")

        for workers in sorted({0, sig_workers}):
            clear_memo()
            gc.collect()
            t0 = time.perf_counter()
            replica = Replica(ReplicaConfig(l1_rpc=l1.url, sig_workers=workers,
                                            datadir=os.path.join(tmp, f"replica{workers}")))
            try:
                t1 = time.perf_counter()
                read = replica.read_l1()
                t2, cpu2, main2 = time.perf_counter(), time.process_time(), time.thread_time()
                count = replica.apply_read(read)
                replica.chain.wait_writes()  # the last blocks are in LevelDB too
                t3, cpu3, main3 = time.perf_counter(), time.process_time(), time.thread_time()
                assert count == len(posted) and not replica.mismatched
            finally:
                replica.close()
            how = f"signatures on {workers} worker processes" if workers else "serial signatures"
            key = "serial" if not workers else f"workers_{workers}"
            out[f"derive_{key}"] = round(len(fills) / (t3 - t2))
            out[f"from_l1_{key}"] = round(len(fills) / (t3 - t0))
            out[f"derive_per_cpu_s_{key}"] = round(len(fills) / (cpu3 - cpu2))
            main_rate = out[f"replica_main_thread_per_cpu_s_{key}"] = round(
                len(fills) / (main3 - main2))
            print(f"  replica given the L1 URL, {how}: derive + store in LevelDB "
                  f"{t3 - t2:.2f} s = {out[f'derive_{key}']:,} fills/s "
                  f"({out[f'derive_per_cpu_s_{key}']:,} per CPU-second of this process (all its "
                  f"threads: calldata reads, LevelDB writes), "
                  f"{main_rate:,} per CPU-second of its main thread; "
                  f"load average {os.getloadavg()[0]:.1f}); with start-up "
                  f"{t1 - t0:.2f} s and reading L1 {t2 - t1:.2f} s (eth_getLogs, calldata): "
                  f"{out[f'from_l1_{key}']:,} fills/s")
        # the in-process figure on this same workload, for a fair comparison
        fill_blocks = cut_blocks(fills, max_bytes, max_steps)
        for workers in sorted({0, sig_workers}):
            dt, cpu = settle(genesis, domain, addresses, fill_blocks, workers)
            how = f"signatures on {workers} worker processes" if workers else "serial signatures"
            key = "serial" if not workers else f"workers_{workers}"
            out[f"in_process_{key}"] = round(len(fills) / dt)
            out[f"settle_per_cpu_s_{key}"] = round(len(fills) / cpu)
            main_ratio = (out[f"replica_main_thread_per_cpu_s_{key}"]
                          / out[f"settle_per_cpu_s_{key}"])
            print(f"  in-process settlement of the same {len(fills):,} fills between the same "
                  f"{accounts:,} traders (deposits not timed), {how}: "
                  f"{out[f'in_process_{key}']:,} fills/s ({round(len(fills) / cpu):,} per "
                  f"CPU-second; load average {os.getloadavg()[0]:.1f}); replica derive + store "
                  f"/ in-process = {out[f'derive_{key}'] / out[f'in_process_{key}']:.2f}, "
                  f"from the L1 URL / in-process = "
                  f"{out[f'from_l1_{key}'] / out[f'in_process_{key}']:.2f}; per CPU-second "
                  f"of the main thread, replica / in-process = "
                  f"{main_ratio:.2f}")
        return out
    finally:
        l1.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------- end to end

def _post(conn: http.client.HTTPConnection, body: bytes) -> Any:
    conn.request("POST", "/", body, {"content-type": "application/json"})
    return json.loads(conn.getresponse().read())


def _pair_bodies(domain: Domain, maker: Signer, taker: Signer, count: int,
                 salt0: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    from node.client import order_params

    out = []
    for i in range(count):
        m = Order(maker.address, MARKET, False, PRICE, 1, salt0 + i, EXPIRY)
        k = Order(taker.address, MARKET, True, PRICE, 1, salt0 + i, EXPIRY)
        out.append((order_params(m, maker.sign_order(domain, m)[1], "GTC"),
                    order_params(k, taker.sign_order(domain, k)[1], "IOC")))
    return out


def _req(i: int, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "l2_sendOrder", "params": [params]}


def client_main(spec: dict[str, Any], start: Any, out: Any) -> None:
    """One load client process: pre-signs its pairs, waits for ``start``,
    sends for ``spec['duration']`` s, reports counts to ``out``."""
    domain = Domain(spec["chain_id"], bytes.fromhex(spec["rollup"]))
    maker, taker = Signer(trader_key(spec["maker"])), Signer(trader_key(spec["taker"]))
    pairs = _pair_bodies(domain, maker, taker, spec["pairs"], spec["salt0"])
    k = spec["batch_pairs"]
    if k:  # JSON-RPC batch requests of k pairs
        bodies = [json.dumps([_req(j, p) for j, pair in enumerate(pairs[i:i + k]) for p in pair])
                  .encode() for i in range(0, len(pairs), k)]
    else:  # single requests, maker then taker
        bodies = [json.dumps(_req(1, p)).encode() for pair in pairs for p in pair]
    out.put(("ready", spec["name"], None))
    start.wait()
    conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=60)
    end = time.monotonic() + spec["duration"]
    fills = sent = errors = in_window = 0
    first_error = None
    for body in bodies:
        if time.monotonic() >= end:
            break
        try:
            reply = _post(conn, body)
        except (OSError, http.client.HTTPException) as exc:
            errors += 1
            first_error = first_error or repr(exc)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=60)
            continue
        for r in reply if isinstance(reply, list) else [reply]:
            sent += 1
            if "error" in r:
                errors += 1
                first_error = first_error or r["error"].get("message")
            else:
                fills += len(r["result"]["fills"])
        if time.monotonic() <= end:
            in_window = fills
    ran_out = time.monotonic() < end
    out.put(("done", spec["name"], {"fills": fills, "fills_in_window": in_window,
                                    "requests": sent, "errors": errors,
                                    "first_error": first_error, "ran_out": ran_out}))


def probe_main(spec: dict[str, Any], start: Any, out: Any) -> None:
    """Latency probe: a maker, then a timed taker every ``interval`` s (plus
    a random 0..interval jitter, so that takers arrive at every phase of the
    block period); the latency of a taker ends when ``l2_getTransactionReceipt``
    of its fill answers. Takers go out on schedule on one connection while a
    second thread polls the receipt of the oldest in flight (every 5 ms, the
    next one at once when it is in) on another, so a slow confirmation never
    delays the next taker: a sequential probe that waits for each fill falls
    behind whenever a confirmation outlasts the interval, then sends each
    taker right after the seal it saw, i.e. always a whole block period
    before the next seal (p50 = p99 = the block time)."""
    import random
    import threading

    domain = Domain(spec["chain_id"], bytes.fromhex(spec["rollup"]))
    maker, taker = Signer(trader_key(spec["maker"])), Signer(trader_key(spec["taker"]))
    count = int(spec["duration"] / spec["interval"]) + 2
    pairs = [(json.dumps(_req(1, m)).encode(), json.dumps(_req(2, t)).encode())
             for m, t in _pair_bodies(domain, maker, taker, count, spec["salt0"])]
    jitter = random.Random(spec["salt0"])
    out.put(("ready", spec["name"], None))
    start.wait()
    end = time.monotonic() + spec["duration"]
    latencies: list[float] = []
    errors = [0]
    first_error: list[str | None] = [None]
    pending: dict[str, float] = {}  # fill tx hash -> time its taker was sent
    lock = threading.Lock()
    sending = threading.Event()  # set when the sender is done

    def error(what: str) -> None:
        errors[0] += 1
        first_error[0] = first_error[0] or what

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
        while True:
            with lock:
                waiting = list(pending.items())
            if not waiting:
                if sending.is_set():
                    return
                time.sleep(0.005)
                continue
            # the oldest first, the next at once only when it is in (a single request
            # each: a batch would queue behind the load's batches)
            for tx, t_send in sorted(waiting, key=lambda w: w[1]):
                body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "l2_getTransactionReceipt",
                                   "params": [tx]}).encode()
                try:
                    r = _post(conn, body)
                except (OSError, http.client.HTTPException) as exc:
                    error(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
                    continue
                now = time.monotonic()
                if r.get("result") is not None:
                    latencies.append(now - t_send)
                elif now - t_send > 30:
                    error(f"fill {tx} not in a sealed block after 30 s")
                else:
                    break
                with lock:
                    del pending[tx]
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
    for i, (mbody, tbody) in enumerate(pairs):
        t_next = end - spec["duration"] + (i + jitter.random()) * spec["interval"]
        if max(t_next, time.monotonic()) >= end:  # (a busy node makes probes late)
            break
        time.sleep(max(0.0, t_next - time.monotonic()))
        try:
            _post(conn, mbody)
            t_send = time.monotonic()
            r = _post(conn, tbody)
        except (OSError, http.client.HTTPException) as exc:  # incl. unanswered
            error(repr(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", spec["port"], timeout=30)
            continue
        if "error" in r or not r["result"]["fills"]:
            error(str(r.get("error", "the probe's taker did not fill")))
            continue
        with lock:
            pending[r["result"]["fills"][0]["txHash"]] = t_send
    sending.set()
    poller.join(timeout=60)
    out.put(("done", spec["name"], {"latencies": latencies, "errors": errors[0],
                                    "first_error": first_error[0]}))


class Rpc:
    """Minimal JSON-RPC client of the node for the bench's own reads."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def __call__(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": list(params)}).encode()
        try:
            r = _post(self.conn, body)
        except (OSError, http.client.HTTPException):  # the server closed an idle connection
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            r = _post(self.conn, body)
        if "error" in r:
            raise RuntimeError(f"{method}: {r['error']}")
        return r["result"]


def _fills_in_blocks(rpc: Rpc, first: int, last: int) -> int:
    return sum(len(rpc("l2_getBlockByNumber", hex(n), True)["fills"])
               for n in range(first, last + 1))


def _quantity(v: Any) -> int:
    return int(v, 16) if isinstance(v, str) else int(v)


def _batch_index(batch: dict[str, Any] | None) -> int:
    return -1 if batch is None else _quantity(batch["index"])


def _safe_head(rpc: Rpc) -> int:
    # not l2_syncStatus: it makes blocking L1 calls on the node's event loop
    return _quantity(rpc("l2_getBlockByNumber", "safe", False)["number"])


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of ``pid`` in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except OSError:
                continue
    return kids


def _helper_cpu(pids: tuple[int, ...]) -> dict[int, float]:
    """CPU seconds so far of the node's child processes other than ``pids``
    (its signature-recovery workers), by pid."""
    out = {}
    for p in _children(pids[0]) if pids else []:
        if p not in pids:
            try:
                out[p] = cpu_seconds(p)
            except OSError:
                continue
    return out


def fund(node_url: str, l1_url: str, traders: list[int], amount: int) -> None:
    """Dev account 3 mints USDC on L1 and deposits ``amount`` to each trader's
    L2 account; waits until the node has included every deposit."""
    from l1_stub.client import connect, wait_receipt
    from node.client import L2Client
    from node.replay import FAUCET_CAP
    from node.signing import dev_keys
    from node.wallet import rollup_client

    funder = dev_keys(4)[3]
    with L2Client(node_url) as client, connect(l1_url) as w3:
        rollup = rollup_client(client, w3)
        total = amount * len(traders)
        hashes = [rollup.faucet(funder, min(FAUCET_CAP, total - i))
                  for i in range(0, total, FAUCET_CAP)]
        hashes.append(rollup.approve(funder, total))
        hashes += [rollup.deposit(funder, Signer(trader_key(t)).address, amount) for t in traders]
        for h in hashes:
            wait_receipt(w3, h, timeout=300)
        deadline = time.monotonic() + 300
        for t in traders:
            while int(client.get_account(Signer(trader_key(t)).address, "pending")
                      ["collateral"]) < amount:
                if time.monotonic() > deadline:
                    raise TimeoutError("bench deposits did not reach L2")
                time.sleep(0.2)


def run_load(name: str, port: int, domain: Domain, *, processes: int, batch_pairs: int,
             duration: float, max_rate: float, first_trader: int, salt0: int,
             probe_interval: float, catch_up: float, profile: tuple[int, str] | None = None,
             pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """One end-to-end run; returns its figures (see the module docstring)."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    base = {"chain_id": domain.chain_id, "rollup": domain.verifying_contract.hex(), "port": port,
            "duration": duration, "salt0": salt0}
    pairs = int(math.ceil(max_rate * duration / processes)) + batch_pairs
    procs = [ctx.Process(target=client_main, args=(
        {**base, "name": f"c{i}", "maker": first_trader + 2 * i, "taker": first_trader + 2 * i + 1,
         "pairs": pairs, "batch_pairs": batch_pairs}, start, out)) for i in range(processes)]
    probe_trader = first_trader + 2 * processes
    procs.append(ctx.Process(target=probe_main, args=(
        {**base, "name": "probe", "maker": probe_trader, "taker": probe_trader + 1,
         "interval": probe_interval}, start, out)))
    for p in procs:
        p.start()
    for _ in procs:
        kind, who, _ = out.get(timeout=600)
        assert kind == "ready", who
    rpc = Rpc(port)  # after the clients' signing: a fresh connection
    head0 = int(rpc("eth_blockNumber"), 16)
    safe0 = _safe_head(rpc)
    batch0 = rpc("l2_getBatch", "latest")
    spy = None
    if profile is not None:  # py-spy on the node for the window (collapsed stacks)
        import subprocess

        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                                str(profile[0]), "-d", str(max(1, int(duration))), "-r", "50", "--gil",
                                "-f", "raw", "-o", profile[1]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0 = [cpu_seconds(p) for p in pids]
    helpers0 = _helper_cpu(pids)
    t0 = time.monotonic()
    start.set()
    time.sleep(duration)
    # a fresh connection (the idle one may have been closed), 10 s timeout and one retry
    rpc = Rpc(port)
    head1 = int(rpc("eth_blockNumber"), 16)
    safe1 = _safe_head(rpc)
    batch1 = rpc("l2_getBatch", "latest")
    t_end = time.monotonic()
    window = t_end - t0
    cpu = [round(cpu_seconds(p) - c, 1) for p, c in zip(pids, cpu0, strict=True)]
    helpers1 = _helper_cpu(pids)
    helper_cpu = round(sum(c - helpers0.get(p, 0.0) for p, c in helpers1.items()), 1)
    load = os.getloadavg()[0]
    # after the window: how long until L1 holds every block sealed in it
    safe = safe1
    while safe < head1 and time.monotonic() - t_end < catch_up:
        time.sleep(0.25)
        safe = _safe_head(rpc)
    lag = time.monotonic() - t_end if safe >= head1 else None
    results = {}
    import queue

    for _ in procs:
        try:
            kind, who, data = out.get(timeout=duration + 180)
        except queue.Empty:
            break
        results[who] = data
    missing = ({f"c{i}" for i in range(processes)} | {"probe"}) - set(results)
    if missing:
        print(f"  note: no report from {sorted(missing)} (stuck on an unanswered request)")
    for i in range(processes):
        results.setdefault(f"c{i}", {"fills": 0, "requests": 0, "errors": 1,
                                     "first_error": "no report", "ran_out": False})
    results.setdefault("probe", {"latencies": [], "errors": 1, "first_error": "no report"})
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    if spy is not None:
        spy.wait(timeout=120)
    sealed = _fills_in_blocks(rpc, head0 + 1, head1)
    on_l1 = _fills_in_blocks(rpc, max(head0, safe0) + 1, min(safe1, head1))
    clients = [results[f"c{i}"] for i in range(processes)]
    acked = sum(c["fills"] for c in clients)
    acked_in_window = sum(c.get("fills_in_window", 0) for c in clients)
    lat = sorted(results["probe"]["latencies"])
    q = (lambda p: round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1)) if lat else None
    figures = {
        "mode": name, "processes": processes, "pairs_per_request": batch_pairs or None,
        "duration_s": duration, "node_answered_after_s": round(window, 2),
        "fills_acked": acked, "fills_acked_in_window": acked_in_window,
        "fills_per_s": round(acked_in_window / duration), "fills_sealed_in_window": sealed,
        "sealed_fills_per_s": round(sealed / window),
        "fills_on_l1_in_window": on_l1, "l1_fills_per_s": round(on_l1 / window),
        "l2_blocks": head1 - head0,
        "batches": _batch_index(batch1) - _batch_index(batch0),
        "l1_catch_up_s": None if lag is None else round(lag, 1),
        "errors": sum(c["errors"] for c in clients),
        "first_error": next((c["first_error"] for c in clients if c["first_error"]), None),
        "clients_ran_out": any(c["ran_out"] for c in clients),
        "latency_samples": len(lat),
        "soft_confirmation_p50_ms": q(0.50) if q else None,
        "soft_confirmation_p99_ms": q(0.99) if q else None,
        "latency_mean_ms": round(1000 * statistics.fmean(lat), 1) if lat else None,
        "cpu_s": dict(zip(("node", "l1"), cpu, strict=False)),
        "fills_per_node_cpu_s": round(acked / cpu[0]) if cpu and cpu[0] else None,
        "node_workers_cpu_s": helper_cpu if pids else None,
        "fills_per_node_and_workers_cpu_s": (round(acked / (cpu[0] + helper_cpu))
                                             if cpu and cpu[0] else None),
        "load_average": round(load, 1),
    }
    how = (f"JSON-RPC batches of {batch_pairs} pairs from {processes} client processes"
           if batch_pairs else f"single requests over {processes} connections (1 process each)")
    print(f"end-to-end, {how}, {duration:.0f} s (the node answered the bench's first read "
          f"after it at {window:.1f} s):")
    print(f"  {acked_in_window:,} fills acked in the window = {figures['fills_per_s']:,} fills/s "
          f"({acked:,} with the requests in flight at its end); sealed in L2 blocks "
          f"by {window:.1f} s {sealed:,} ({figures['sealed_fills_per_s']:,}/s, "
          f"{figures['l2_blocks']} blocks); on L1 by its end {on_l1:,} "
          f"({figures['l1_fills_per_s']:,}/s) in {figures['batches']} batches; L1 caught up "
          + (f"{lag:.1f} s after the window" if lag is not None
             else f"NOT within {catch_up:.0f} s (safe head {safe} < {head1})"))
    if cpu:
        print(f"  CPU used in the window: node {cpu[0]} s"
              + (f", its L1 process {cpu[1]} s" if len(cpu) > 1 else "")
              + f" ({figures['fills_per_node_cpu_s']} fills per node CPU-second); "
              + (f"the node's worker processes {helper_cpu} s ("
                 f"{figures['fills_per_node_and_workers_cpu_s']} fills per CPU-second of node "
                 "and workers); " if helper_cpu else "")
              + f"load average {load:.1f} on {os.cpu_count()} CPUs")
    if figures["errors"]:
        print(f"  {figures['errors']} errors, first: {figures['first_error']}")
    if results["probe"]["errors"]:
        print(f"  latency probe: {results['probe']['errors']} errors, first: "
              f"{results['probe'].get('first_error')}")
    if figures["clients_ran_out"]:
        print("  note: clients ran out of pre-signed orders (raise --max-rate): a lower bound")
    print(f"  soft confirmation (taker sent -> fill in a sealed block, {len(lat)} probes): "
          f"p50 {figures['soft_confirmation_p50_ms']} ms, "
          f"p99 {figures['soft_confirmation_p99_ms']} ms")
    return figures


PROFILE_CATEGORIES = [  # first match wins, so the specific ones come first
    ("l2_sendOrder (validate, match, STF, journal)", ("l2_sendOrder",)),
    ("l2_getTransactionReceipt (latency probe)", ("l2_getTransactionReceipt",)),
    ("l2_syncStatus and other reads", ("l2_syncStatus", "l2_getBlock", "l2_getBatch",
                                       "l2_getAccount", "eth_blockNumber")),
    ("block sealing (seal, SMT commit, store)", ("seal (",)),
    ("batcher (plan, post, receipts)", ("post_batch", "plan_batch", "sync_batches")),
    ("L1 clock, deposits, finality", ("_l1_clock", "on_l1_block", "update_finality",
                                      "include_deposits")),
    ("embedded L1 in-process (py-evm, eth-tester)", ("eth_tester/", "(eth/", "l1_stub/chain.py",
                                                     "l1_stub/server.py")),
    ("L1 JSON-RPC client (web3, requests)", ("web3/", "requests/", "urllib3/",
                                             "l1_stub/process.py")),
    ("JSON-RPC parsing/dispatch", ("jsonrpcserver", "node/server.py", "json/")),
    ("HTTP server (hypercorn, h11)", ("hypercorn", "h11")),
    ("trio scheduler and I/O", ("trio/",)),
]


def summarize_profile(path: str) -> dict[str, float]:
    """Share of the node's GIL-holding samples per category (py-spy raw output)."""
    counts: dict[str, int] = {}
    l1_any = total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        name = next((c for c, keys in PROFILE_CATEGORIES if any(k in stack for k in keys)),
                    "other")
        counts[name] = counts.get(name, 0) + int(n)
        if any(k in stack for k in ("web3/", "requests/", "eth_tester/", "(eth/", "l1_stub/")):
            l1_any += int(n)
    shares = {c: round(100 * n / total, 1) for c, n in sorted(counts.items(),
                                                               key=lambda kv: -kv[1])}
    print(f"  node profile ({total} samples of the thread holding the GIL at 50 Hz, %):")
    for c, share in shares.items():
        print(f"    {share:5.1f}%  {c}")
    print(f"    ({100 * l1_any / max(1, total):.1f}% of busy samples are in L1 code or L1 calls)")
    return shares


def bench_e2e(a: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from devnet_process import DevnetProcess  # type: ignore[import-not-found]

    # 0: the node seals by the Rollup's own batch limits (bytes and steps)
    max_block_txs = a.max_block_txs or 65535
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        node = DevnetProcess(Path(tmp) / "data" if a.datadir else None, Path(tmp) / "devnet.log",
                             **{"--block-time": str(a.block_time),
                                "--batch-interval": str(a.batch_interval),
                                "--l1-block-time": str(a.l1_block_time),
                                "--max-block-txs": str(max_block_txs),
                                "--l1": "in-process" if a.l1_in_process else "process"})
        t0 = time.perf_counter()
        node.start(timeout=300)
        print(f"devnet up in {time.perf_counter() - t0:.1f} s (block time {a.block_time} s, "
              f"batch interval {a.batch_interval} s, L1 block time {a.l1_block_time} s, "
              f"max {max_block_txs} txs per block)")
        try:
            rpc = Rpc(node.port)
            cfg = rpc("l2_rollupConfig")
            domain = Domain(int(cfg["l2_chain_id"]), bytes.fromhex(cfg["rollup_address"][2:]))
            runs = [("batch", a.clients, a.batch_pairs, a.max_rate_batch),
                    ("single", a.connections, 0, a.max_rate_single)]
            runs = [r for r in runs if r[0] in a.e2e_runs.split(",")]
            traders = sum(2 * n + 2 for _, n, _, _ in runs)
            t0 = time.perf_counter()
            fund(node.url, node.l1_url, list(range(traders)), 10**12)
            print(f"funded {traders} traders through L1 deposits in "
                  f"{time.perf_counter() - t0:.1f} s")
            assert node.proc is not None
            pids = [node.proc.pid] + [p for p in _children(node.proc.pid)
                                      if "l1_stub" in Path(f"/proc/{p}/cmdline").read_text()]
            first = 0
            for name, n, k, rate in runs:
                out[name] = run_load(name, node.port, domain, processes=n, batch_pairs=k,
                                     duration=a.duration, max_rate=rate, first_trader=first,
                                     salt0=1, probe_interval=a.probe_interval,
                                     catch_up=a.catch_up,
                                     profile=(node.proc.pid, f"{a.profile}.{name}")
                                     if a.profile and node.proc else None,
                                     pids=tuple(pids))
                first += 2 * n + 2
                if a.profile and Path(f"{a.profile}.{name}").exists():
                    out[name]["profile"] = summarize_profile(f"{a.profile}.{name}")
            l1_pids = pids[1:]
            out["node_peak_rss_mb"] = round(peak_rss_mb(node.proc.pid), 1)
            out["l1_peak_rss_mb"] = round(sum(peak_rss_mb(p) for p in l1_pids), 1)
            print(f"peak RSS: node {out['node_peak_rss_mb']} MB, its L1 process "
                  f"{out['l1_peak_rss_mb'] if l1_pids else '(in-process)'} MB")
        finally:
            node.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="derivnet benchmarks: the figures of issue 6 "
                                "(see scripts/bench.py's docstring)")
    p.add_argument("--fills", type=int, default=100_000, help="in-process fills")
    p.add_argument("--accounts", type=int, default=10_000, help="in-process distinct traders")
    p.add_argument("--workers", type=int, default=2,
                   help="in-process signature-recovery processes (0: serial only)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds of each end-to-end run (e.g. 10 for a quick check)")
    p.add_argument("--clients", type=int, default=4, help="client processes, batch run")
    p.add_argument("--batch-pairs", type=int, default=100,
                   help="maker+taker pairs per JSON-RPC batch request")
    p.add_argument("--connections", type=int, default=8, help="connections, single-request run")
    p.add_argument("--max-rate-batch", type=float, default=5_000,
                   help="fills/s the batch clients pre-sign for (not a throttle)")
    p.add_argument("--max-rate-single", type=float, default=2_000,
                   help="fills/s the single-request clients pre-sign for (not a throttle)")
    p.add_argument("--probe-interval", type=float, default=0.1,
                   help="seconds between latency probes")
    p.add_argument("--block-time", type=float, default=0.25)
    p.add_argument("--batch-interval", type=float, default=2.0)
    p.add_argument("--l1-block-time", type=float, default=1.0)
    p.add_argument("--max-block-txs", type=int, default=0,
                   help="devnet --max-block-txs (0: no count limit; blocks are still sealed "
                        "before they would outgrow one L1 batch)")
    p.add_argument("--catch-up", type=float, default=120.0,
                   help="seconds to wait after a run for L1 to hold every sealed block")
    p.add_argument("--datadir", action="store_true", help="run the devnet on a LevelDB datadir")
    p.add_argument("--l1-in-process", action="store_true",
                   help="devnet --l1-in-process (the L1 inside the node's process: 'before')")
    p.add_argument("--profile", metavar="FILE", default=None,
                   help="record the node with py-spy (collapsed stacks) during each run: "
                        "FILE.batch, FILE.single")
    p.add_argument("--replica-fills", type=int, default=20_000,
                   help="fills the replica derives from L1 (0: skip)")
    p.add_argument("--replica-accounts", type=int, default=1_000,
                   help="distinct traders of the replica benchmark (one L1 deposit each)")
    p.add_argument("--dispute-steps", type=int, default=1_000,
                   help="steps of the batch the dispute benchmark plays a whole game over "
                        "(0: skip the one-step proof gas and the dispute)")
    p.add_argument("--stream-subscribers", type=int, default=100,
                   help="WebSocket subscribers of the stream-latency runs (0: skip them)")
    p.add_argument("--stream-stalled", type=int, default=5,
                   help="consumers that never read, in the second stream run")
    p.add_argument("--stream-buffer", type=int, default=200,
                   help="the stalled run's per-connection stream bound in messages (the "
                        "default bound, geth's 10,000, takes longer than a run to fill)")
    p.add_argument("--stream-procs", type=int, default=4,
                   help="client processes the subscribers are spread over")
    p.add_argument("--stream-limit", type=int, default=2000,
                   help="tape trades replayed in each stream run")
    p.add_argument("--stream-duration", type=float, default=30.0,
                   help="seconds of steady trading after the replay in each stream run")
    p.add_argument("--skip-in-process", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--l1-cap-batches", type=int, default=10,
                   help="full batches posted to a bare L1 process before the e2e runs (0: skip)")
    p.add_argument("--e2e-runs", default="batch,single",
                   help="end-to-end runs to make, comma-separated (batch, single)")
    p.add_argument("--json", action="store_true", help="also print every figure as JSON")
    a = p.parse_args()
    tune_gc()  # as the devnet, replica and L1 processes do
    figures: dict[str, Any] = {}
    if not a.skip_in_process:
        workers = [0] + ([a.workers] if a.workers else [])
        figures["in_process"] = bench_stf(a.fills, a.accounts, workers)
    if a.replica_fills:
        figures["replica"] = bench_replica(a.replica_fills, a.replica_accounts, a.workers)
    if a.dispute_steps:
        from bench_disputes import osp_gas, run as bench_dispute

        print("one-step proofs and a whole dispute (issue 7):")
        figures["disputes"] = {**osp_gas(), **bench_dispute(a.dispute_steps,
                                                           a.dispute_steps * 7 // 10)}
    if a.stream_subscribers:
        from stream_latency import measure as stream_latency

        print(f"streams (issue 9): {a.stream_subscribers} subscribers to the blocks channel; "
              f"then again with {a.stream_stalled} consumers that never read (stream bound "
              f"{a.stream_buffer} messages per connection in that run)")
        runs = {}
        for stalled in (0, a.stream_stalled):
            runs[stalled] = stream_latency(a.stream_subscribers, a.stream_procs, stalled,
                                           a.stream_limit, a.stream_duration,
                                           block_time=a.block_time,
                                           buffer=a.stream_buffer if stalled else None)
        figures["streams"] = {"plain": runs[0], "stalled": runs[a.stream_stalled]}
    if not a.skip_e2e:
        if a.l1_cap_batches:
            from bench_l1 import run as bench_l1_cap

            figures["l1_cap"] = bench_l1_cap(a.l1_cap_batches)
        figures.update(bench_e2e(a))
    print("figures")
    flat = {}
    if "in_process" in figures:
        ip = figures["in_process"]
        flat["in_process_fills_per_s"] = max(v for k, v in ip.items()
                                             if k == "serial" or (k.startswith("workers")
                                                                  and not k.endswith("cpu_s")
                                                                  and "funding" not in k))
        flat["in_process_fills_per_s_with_funding"] = max(
            v for k, v in ip.items() if k.endswith("_with_funding"))
        flat["in_process_fills_per_s_with_risk"] = max(
            v for k, v in ip.items() if k.endswith("_with_risk"))
        flat["in_process_fills_per_cpu_s_with_risk"] = max(
            v for k, v in ip.items() if k.endswith("_with_risk_per_cpu_s"))
        flat["in_process_risk_cpu_us_per_fill"] = ip["risk_cpu_us_per_fill"]
        flat["in_process_fills_per_cpu_s"] = max(v for k, v in ip.items()
                                                 if k.endswith("cpu_s") and "funding" not in k)
        flat["in_process_fills_per_cpu_s_with_funding"] = max(
            v for k, v in ip.items() if k.endswith("_with_funding_per_cpu_s"))
        flat["in_process_accounts"] = ip["accounts"]
        flat["in_process_largest_block_bytes"] = ip["largest_block_bytes"]
    if "replica" in figures:
        rp = figures["replica"]
        flat["replica_derivation_fills_per_s"] = max(v for k, v in rp.items()
                                                     if k.startswith("derive_")
                                                     and "per_cpu" not in k)
        flat["replica_from_l1_fills_per_s"] = max(v for k, v in rp.items()
                                                  if k.startswith("from_l1_"))
        flat["replica_derive_in_memory_fills_per_s"] = rp["in_memory_fills_per_s"]
        flat["replica_in_process_same_workload_fills_per_s"] = max(
            v for k, v in rp.items() if k.startswith("in_process_"))
        flat["replica_accounts"] = rp["accounts"]
    flat.update(figures.get("disputes", {}))
    flat.update(figures.get("l1_cap", {}))
    if "streams" in figures:
        plain, stalled = figures["streams"]["plain"], figures["streams"]["stalled"]
        flat["stream_subscribers"] = plain["subscribers"]
        flat["stream_p50_ms"] = plain["p50_ms"]
        flat["stream_p99_ms"] = plain["p99_ms"]
        flat["stream_loadavg_1m"] = plain["loadavg_1m"]  # the machine's load during the run
        flat["stream_blocks_missed"] = plain["blocks_missed"]
        flat["block_cadence_ms"] = plain["cadence_mean_ms"]
        flat["block_cadence_with_stalled_ms"] = stalled["cadence_mean_ms"]
        flat["stream_p99_with_stalled_ms"] = stalled["p99_ms"]
        flat["stalled_consumers_dropped"] = f"{stalled['stalled_dropped']}/{stalled['stalled']}"
    for mode in ("batch", "single"):
        if mode in figures:
            f = figures[mode]
            flat[f"e2e_{mode}_fills_per_s"] = f["fills_per_s"]
            flat[f"e2e_{mode}_l1_fills_per_s"] = f["l1_fills_per_s"]
            flat[f"e2e_{mode}_l1_catch_up_s"] = f["l1_catch_up_s"]
            flat[f"e2e_{mode}_fills_per_node_cpu_s"] = f["fills_per_node_cpu_s"]
            flat[f"soft_confirmation_{mode}_p50_ms"] = f["soft_confirmation_p50_ms"]
            flat[f"soft_confirmation_{mode}_p99_ms"] = f["soft_confirmation_p99_ms"]
    for key in ("node_peak_rss_mb", "l1_peak_rss_mb"):
        if key in figures:
            flat[key] = figures[key]
    for k, v in flat.items():
        print(f"  {k}: {v}")
    if a.json:
        print(json.dumps({"figures": flat, **figures}))


if __name__ == "__main__":
    main()
