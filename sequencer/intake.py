"""Order intake ahead of the sequencer: signature recovery for JSON-RPC
batches on worker processes, pipelined with execution.

A JSON-RPC batch of ``l2_sendOrder`` requests is matched in order on the
event loop, one request at a time. Before that, ``SignaturePrefetch``
sends the batch's orders to a process pool, where each order is parsed,
hashed (EIP-712) and its signer recovered (~40 us of libsecp256k1 per
order); the results seed ``node.sigverify``'s memo, so the sequencer's own
check (``signer_of``) is a dictionary hit. While one batch is recovered on
the workers, the event loop executes others and seals blocks.

The prefetch only warms a memo of a pure function: an order it cannot
parse, or a wrong guess, costs a useless memo entry, never a wrong answer.
Error semantics stay those of the sequencer's own checks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import trio

from node.crypto import SignatureError, recover_address
from node.eip712 import Domain, order_hash
from node.runtime import exit_with_parent
from node.sigverify import remember
from node.transactions import Order

log = logging.getLogger(__name__)

MIN_ORDERS = 16
"""Fewest orders in a batch worth a trip to the workers (a recovery costs
~40 us; the trip ~0.3 ms of this process's time)."""
CHUNK = 128
"""Orders per worker job."""

Recovered = list[tuple[bytes, bytes, bytes | None]]  # (order hash, signature, signer)


def _uint(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value, 16) if value.lower().startswith("0x") else int(value)
    raise ValueError("not an integer")


def _hex(value: Any, size: int) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 2 + 2 * size:
        raise ValueError("bad hex")
    return bytes.fromhex(value[2:])


def order_of(params: Any) -> tuple[Order, bytes]:
    """(order, signature) of one ``l2_sendOrder`` request object, parsed
    leniently (a numeric market only). Raises ValueError (or KeyError,
    TypeError) on anything else: the caller skips it."""
    obj = params["order"]
    if not isinstance(obj["isBuy"], bool):
        raise ValueError("isBuy: not a boolean")
    order = Order(
        account=_hex(obj["account"], 20),
        market=_uint(obj["market"]),
        is_buy=obj["isBuy"],
        price=_uint(obj["price"]),
        size=_uint(obj["size"]),
        salt=_uint(obj["salt"]),
        expiry=_uint(obj["expiry"]),
    )
    order.validate_ranges()
    return order, _hex(params["signature"], 65)


def recover_orders(domain: Domain, requests: Sequence[Any]) -> Recovered:
    """(order hash, signature, signer or None) of every ``l2_sendOrder``
    params object in ``requests`` that parses (on a worker process)."""
    out: Recovered = []
    for params in requests:
        try:
            order, signature = order_of(params)
        except Exception:  # noqa: BLE001 - the sequencer reports it
            continue
        digest = order_hash(domain, order)
        try:
            signer: bytes | None = recover_address(digest, signature)
        except SignatureError:
            signer = None
        out.append((digest, signature, signer))
    return out


def send_order_params(payload: Sequence[Any]) -> list[Any]:
    """The params objects of the ``l2_sendOrder`` requests of a batch."""
    out = []
    for request in payload:
        if (isinstance(request, dict) and request.get("method") == "l2_sendOrder"
                and isinstance(request.get("params"), list) and len(request["params"]) == 1
                and isinstance(request["params"][0], dict)):
            out.append(request["params"][0])
    return out


class SignaturePrefetch:
    """Recovers the signers of a JSON-RPC batch's orders on ``workers``
    processes (spawned on first use) before the batch is dispatched.

    ``await prefetch(payload)`` returns once the memo holds every order of
    ``payload`` that parses (or at once for batches under MIN_ORDERS). A
    worker failure is logged and ignored: the sequencer then recovers the
    signatures itself.
    """

    def __init__(self, domain: Domain, workers: int | None = None) -> None:
        self.domain = domain
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        self.orders = 0  # orders recovered on the workers

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=exit_with_parent,
                                             initargs=(os.getpid(),))
        return self._pool

    def start(self) -> None:
        """Spawn the workers and import the hashing and recovery code in each
        (a second or two of CPU each), so the first batch does not wait for it.
        Blocks until they are ready: call it from a worker thread."""
        pool = self._executor()
        for job in [pool.submit(recover_orders, self.domain, []) for _ in range(self.workers)]:
            job.result()

    async def prefetch(self, payload: Sequence[Any]) -> None:
        params = send_order_params(payload)
        if len(params) < MIN_ORDERS:
            return
        pool = self._executor()
        jobs = [pool.submit(recover_orders, self.domain, params[i:i + CHUNK])
                for i in range(0, len(params), CHUNK)]
        try:
            results = await trio.to_thread.run_sync(lambda: [j.result() for j in jobs],
                                                    abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - a broken pool only costs speed
            log.warning("signature prefetch failed (the sequencer recovers them itself): %r", exc)
            self.close()
            return
        for part in results:
            for digest, signature, signer in part:
                remember(digest, signature, signer)
            self.orders += len(part)

    def close(self) -> None:
        """Kill the workers (they hold no state) and drop the pool. A pool
        only shut down waits at interpreter exit for the jobs its workers
        run: a stop right after start waited seconds for ``start``'s
        imports, and CI once saw it hang past 30 s. Python 3.14's
        ``ProcessPoolExecutor.kill_workers()`` does the same."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
