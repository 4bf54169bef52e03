"""Signer recovery for the STF and the sequencer: a memo, and a process pool
that recovers many signatures in parallel ahead of execution.

Recovering a secp256k1 signer costs about 40 us, two per fill, which is most
of a fill's cost in Python. ``signer_of`` memoizes (a pure function), so an
order checked by the sequencer on arrival is not recovered again when its
fill is applied, and ``Prefetcher`` fills the memo for a whole block on
worker processes while the main process executes the previous block (the
"sigverify stage" of high-throughput chains).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from node.crypto import SignatureError, recover_address
from node.eip712 import Domain, clear_order_hashes, order_hash, seed_order_hash
from node.runtime import exit_with_parent
from node.transactions import DecodeError, Fill, Transaction, decode_tx, encode_tx

_MEMO: OrderedDict[bytes, bytes | None] = OrderedDict()
MEMO_SIZE = 1 << 18


def _recover(digest: bytes, signature: bytes) -> bytes | None:
    try:
        return recover_address(digest, signature)
    except SignatureError:
        return None


def remember(digest: bytes, signature: bytes, signer: bytes | None) -> None:
    """Record a recovery result computed elsewhere."""
    _MEMO[digest + signature] = signer
    if len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)


def clear_memo() -> None:
    """Forget every memoized recovery and order hash (benchmarks start cold)."""
    _MEMO.clear()
    clear_order_hashes()


def signer_of(digest: bytes, signature: bytes) -> bytes | None:
    """20-byte address that signed the 32-byte ``digest``, or None if the
    65-byte ``signature`` is unusable. Memoized."""
    key = digest + signature
    hit = _MEMO.get(key, b"")
    if hit != b"":
        return hit
    addr = _recover(digest, signature)
    remember(digest, signature, addr)
    return addr


Recovered = list[tuple[bytes, bytes, bytes | None]]


def _recover_many(pairs: Sequence[tuple[bytes, bytes]]) -> Recovered:
    return [(d, s, _recover(d, s)) for d, s in pairs]


def fill_signatures(domain: Domain, txs: Iterable[Transaction]) -> list[tuple[bytes, bytes]]:
    """The (order hash, signature) pairs of the fills among ``txs``."""
    pairs = []
    for tx in txs:
        if isinstance(tx, Fill):
            pairs.append((order_hash(domain, tx.maker), tx.maker_signature))
            pairs.append((order_hash(domain, tx.taker), tx.taker_signature))
    return pairs


Job = Future[Recovered]
# per fill: (maker order hash, maker signer, taker order hash, taker signer)
FillRecovered = list[tuple[bytes, bytes | None, bytes, bytes | None]]
FillJob = tuple[Sequence[Fill], Future[FillRecovered]]


def _recover_fills(domain: Domain, encoded: Sequence[bytes]) -> FillRecovered:
    """Decode encoded fills, hash their orders and recover their signers."""
    out = []
    for raw in encoded:
        fill = decode_tx(raw)
        assert isinstance(fill, Fill)
        maker_hash, taker_hash = order_hash(domain, fill.maker), order_hash(domain, fill.taker)
        out.append((maker_hash, _recover(maker_hash, fill.maker_signature),
                    taker_hash, _recover(taker_hash, fill.taker_signature)))
    return out


def recover_fill(domain: Domain, raw: bytes
                 ) -> tuple[bytes, bytes | None, bytes, bytes | None] | None:
    """(maker order hash, maker signer, taker order hash, taker signer) of an
    encoded fill; None if ``raw`` does not decode to a fill (the STF makes
    it a no-op). A signer is None for an unusable signature."""
    try:
        fill = decode_tx(raw)
    except DecodeError:
        return None
    if not isinstance(fill, Fill):
        return None
    maker_hash, taker_hash = order_hash(domain, fill.maker), order_hash(domain, fill.taker)
    return (maker_hash, _recover(maker_hash, fill.maker_signature),
            taker_hash, _recover(taker_hash, fill.taker_signature))


def seed_fills(domain: Domain, txs: Sequence[Transaction | None],
               fills: Iterable[tuple[int, bytes, bytes | None, bytes, bytes | None]]) -> None:
    """Seed the order-hash and signer memos from ``recover_fill`` results
    computed elsewhere: ``fills`` holds (index into ``txs``, maker order
    hash, maker signer, taker order hash, taker signer); an index whose
    transaction is not a fill is skipped."""
    _seed(domain, [(txs[i], rest) for i, *rest in fills if isinstance(txs[i], Fill)])


def _seed(domain: Domain, fills: Iterable[tuple[Any, Sequence[Any]]]) -> None:
    """Seed the memos from (fill, (maker order hash, maker signer, taker
    order hash, taker signer)) pairs; trim the signer memo to MEMO_SIZE."""
    memo = _MEMO
    for fill, (maker_hash, maker, taker_hash, taker) in fills:
        memo[maker_hash + fill.maker_signature] = maker
        memo[taker_hash + fill.taker_signature] = taker
        seed_order_hash(domain, fill.maker, maker_hash)
        seed_order_hash(domain, fill.taker, taker_hash)
    while len(memo) > MEMO_SIZE:
        memo.popitem(last=False)


class Prefetcher:
    """Recovers signatures on ``workers`` processes (default: CPU count).

    ``submit(pairs)`` starts the work and returns a future; ``collect(future)``
    waits and seeds the memo. Use as a context manager to shut the pool down.
    """

    def __init__(self, workers: int | None = None, chunk: int = 512) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.chunk = chunk
        self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=exit_with_parent,
                                        initargs=(os.getpid(),))

    def submit(self, pairs: Sequence[tuple[bytes, bytes]]) -> list[Job]:
        """Recover the signers of (digest, signature) ``pairs``."""
        parts = [pairs[i:i + self.chunk] for i in range(0, len(pairs), self.chunk)]
        return [self.pool.submit(_recover_many, p) for p in parts]

    def submit_fills(self, domain: Domain, fills: Sequence[Fill]) -> list[FillJob]:
        """Hash the orders of ``fills`` and recover their signers on the
        workers (they get the fills' packed encoding); ``collect_fills``
        then seeds both the order-hash memo and the signer memo, so the
        main process hashes nothing. A fill whose fields do not fit their
        packed widths is left out (the STF rejects it anyway)."""
        sendable, encoded = [], []
        for fill in fills:
            try:
                encoded.append(encode_tx(fill))
            except OverflowError:
                continue
            sendable.append(fill)
        step = self.chunk // 2  # two signatures a fill
        return [(sendable[i:i + step],
                 self.pool.submit(_recover_fills, domain, encoded[i:i + step]))
                for i in range(0, len(sendable), step)]

    @staticmethod
    def collect_fills(domain: Domain, jobs: list[FillJob]) -> None:
        """Wait for ``submit_fills`` jobs; seed the order-hash and signer memos."""
        for fills, future in jobs:
            _seed(domain, zip(fills, future.result()))

    @staticmethod
    def collect(jobs: list[Job]) -> None:
        """Wait for ``jobs`` and seed the memo with their results."""
        memo = _MEMO
        for future in jobs:
            for digest, sig, signer in future.result():
                memo[digest + sig] = signer
        while len(memo) > MEMO_SIZE:
            memo.popitem(last=False)

    def close(self) -> None:
        self.pool.shutdown()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
