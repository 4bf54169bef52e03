"""The sequencer: takes orders, cancels, oracle prices, withdrawals and L1
deposits, matches orders into fills, applies them to the chain's pending
state and seals blocks.

Accepted orders are journaled in the store before the call returns, so a
crash loses no order: on restart the journal is replayed through the book
in arrival order against the stored head state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from node import exceptions as err
from node.blocks import Block, Receipt
from node.chain import Chain
from node.eip712 import cancel_digest, order_hash
from node.sigverify import signer_of
from node.transactions import (
    BODY_BYTES,
    Deposit,
    Fill,
    OraclePrice,
    Order,
    Transaction,
    Withdraw,
    encode_tx,
    tx_type,
)
from sequencer.batcher import BLOCK_HEADER_BYTES, ROLLUP_MAX_BATCH_BYTES, ROLLUP_MAX_STEPS
from sequencer.book import BookError, Match, OrderBook, RestingOrder, StopMatching
from sequencer.validation import check_order

_JOURNAL = b"j:"


class UnknownOrder(err.InvalidTransaction):
    """No live order with this hash in the book."""


class InvalidCancelSignature(err.InvalidTransaction):
    """A cancel not signed by the order's account."""


class OrderRejectedByBook(err.InvalidTransaction):
    """The book refused the order (duplicate, post-only would cross, bad time in force)."""


@dataclass(frozen=True, slots=True)
class FillReport:
    """One fill made by an incoming order (size/price in market units)."""

    maker_hash: bytes
    taker_hash: bytes
    size: int
    price: int
    tx_hash: bytes


@dataclass(slots=True)
class OrderResult:
    """What happened to an order: status is one of ``filled``,
    ``partiallyFilled`` (rest resting), ``resting``, ``cancelled`` (IOC rest
    dropped or taker ran out of margin)."""

    order_hash: bytes
    status: str
    filled: int
    remaining: int
    fills: list[FillReport] = field(default_factory=list)


def _encode_journal(order: Order, signature: bytes, tif: str) -> bytes:
    return order.encode() + signature + tif.encode()


def tx_size(tx: Transaction) -> int:
    """Bytes of ``tx`` in a batch (type byte + body, docs/protocol.md)."""
    body = BODY_BYTES.get(tx_type(tx))
    return 1 + body if body is not None else len(encode_tx(tx))


class Sequencer:
    """Owns the order books and feeds the chain's pending block.

    clock() returns unix seconds (float); the block timestamp is its floor.
    ``max_block_txs`` seals a block early when it fills up.

    Blocks always fit a batch (docs/protocol.md "Batches"): before applying a
    transaction that would take the pending block past ``max_block_bytes``
    of batch data (18-byte block header + encoded txs) or ``max_block_steps``
    transactions, the pending block is sealed, also in the middle of one
    order's matching. The node sets both from the Rollup's MAX_BATCH_BYTES
    / MAX_STEPS (and the L1 block gas limit).

    ``frozen`` (set by the node from L1) makes new orders and withdrawals
    fail with RollupFrozen.
    """

    def __init__(
        self,
        chain: Chain,
        clock: Callable[[], float],
        max_block_txs: int = 10_000,
        on_block: Callable[[Block], None] | None = None,
        max_block_bytes: int = ROLLUP_MAX_BATCH_BYTES,
        max_block_steps: int = ROLLUP_MAX_STEPS,
    ) -> None:
        self.chain = chain
        self.clock = clock
        self.max_block_txs = max_block_txs
        self.max_block_bytes = max_block_bytes
        self.max_block_steps = max_block_steps
        self.on_block = on_block
        self.l1_origin = 0
        self.frozen = False
        # (pending tx count, batch bytes of the pending block) as last counted
        self._pending_size = (0, BLOCK_HEADER_BYTES)
        self.books = {m: OrderBook(m) for m in chain.state.markets}
        self._sequence = 0
        self._restore_journal()

    # -- orders ----------------------------------------------------------
    def _now(self) -> int:
        now = int(self.clock())
        self.chain.open_block(now)
        return self.chain.pending_timestamp

    def send_order(
        self, order: Order, signature: bytes, time_in_force: str = "GTC", journal: bool = True
    ) -> OrderResult:
        """Validate, match and (GTC) rest ``order``; fills go to the pending block.

        Raises DecodeError (malformed) or InvalidTransaction (a rule, see
        sequencer.validation.check_order, plus OrderRejectedByBook).
        """
        self._check_live()
        now = self._now()
        state = self.chain.state
        digest = order_hash(self.chain.domain, order)
        remaining = check_order(state, order, signature, digest, now)
        book = self.books[order.market]
        fills: list[FillReport] = []

        def accept(maker: RestingOrder, size: int) -> bool:
            fill = Fill(maker.order, maker.signature, order, signature, size, maker.order.price)
            try:
                receipt = self._apply(fill, mid_match=True)
            except err.InvalidTransaction as exc:
                if exc.role == "maker":
                    return False
                raise StopMatching(str(exc)) from exc
            fills.append(FillReport(maker.order_hash, digest, size, maker.order.price,
                                    receipt.tx_hash))
            return True

        try:
            matches: list[Match] = book.match(
                order, signature, digest, remaining, now, time_in_force, accept
            )
        except BookError as exc:
            raise OrderRejectedByBook(f"{type(exc).__name__}: {exc}") from exc
        filled = sum(m.size for m in matches)
        left = remaining - filled
        resting = book.get(digest) is not None
        if left == 0:
            status = "filled"
        elif resting:
            status = "partiallyFilled" if filled else "resting"
        else:
            status = "cancelled"
        if journal and (resting or fills):
            self._sequence += 1
            self.chain.db.put(
                _JOURNAL + self._sequence.to_bytes(8, "big") + digest,
                _encode_journal(order, signature, time_in_force),
            )
        if len(self.chain.pending_txs) >= self.max_block_txs:
            self.seal()
        return OrderResult(digest, status, order.size - left, left if resting else 0, fills)

    def cancel_order(self, hash_: bytes, signature: bytes) -> RestingOrder:
        """Remove a resting order; the Cancel must be signed by its account."""
        for book in self.books.values():
            ro = book.get(hash_)
            if ro is not None:
                digest = cancel_digest(self.chain.domain, ro.order.account, hash_)
                if signer_of(digest, signature) != ro.order.account:
                    raise InvalidCancelSignature("cancel is not signed by the order's account")
                book.cancel(hash_)
                return ro
        raise UnknownOrder(f"no resting order 0x{hash_.hex()}")

    # -- other transactions ----------------------------------------------
    def send_oracle_price(self, tx: OraclePrice) -> Receipt:
        self._now()
        return self._apply(tx)

    def send_withdraw(self, tx: Withdraw) -> Receipt:
        self._check_live()
        self._now()
        return self._apply(tx)

    def include_deposit(self, tx: Deposit) -> Receipt:
        self._now()
        return self._apply(tx)

    # -- block size -----------------------------------------------------
    def _check_live(self) -> None:
        if self.frozen:
            raise err.RollupFrozen(
                "the L1 Rollup is frozen (escape hatch): no new orders or withdrawals")

    def pending_size(self) -> tuple[int, int]:
        """(transactions, batch bytes) of the pending block; bytes include
        the 18-byte block header."""
        txs = self.chain.pending_txs
        count, size = self._pending_size
        if count != len(txs):
            if count > len(txs):
                count, size = 0, BLOCK_HEADER_BYTES
            size += sum(len(t) for t in txs[count:])
            self._pending_size = (len(txs), size)
            count = len(txs)
        return count, size

    def _apply(self, tx: Transaction, mid_match: bool = False) -> Receipt:
        """Apply ``tx`` to the pending block, sealing the block first if
        ``tx`` would not fit in one batch with it."""
        count, size = self.pending_size()
        if count and (size + tx_size(tx) > self.max_block_bytes
                      or count + 1 > self.max_block_steps):
            # the order book is mid-match: seal the chain's block only
            self.seal(touch_books=not mid_match)
        return self.chain.apply(tx)

    # -- blocks ----------------------------------------------------------
    def seal(self, *, empty: bool = False, touch_books: bool = True) -> Block | None:
        """Seal the pending block; drops expired resting orders and prunes the journal.

        With nothing pending it returns None, or with ``empty`` seals an
        empty block (a heartbeat for the batcher). ``touch_books=False``
        leaves the order books alone (a seal in the middle of matching).
        """
        if empty and not self.chain.pending_txs:
            ts = max(int(self.clock()), self.chain.head.header.timestamp)
            block: Block | None = self.chain.apply_block(ts, self.l1_origin, ())
        else:
            block = self.chain.seal(self.l1_origin)
        if block is None:
            return None
        self._pending_size = (0, BLOCK_HEADER_BYTES)
        if not touch_books:
            if self.on_block is not None:
                self.on_block(block)
            return block
        for book in self.books.values():
            book.remove_expired(block.header.timestamp)
        self._prune_journal()
        if self.on_block is not None:
            self.on_block(block)
        return block

    def _live_hashes(self) -> set[bytes]:
        return {ro.order_hash for book in self.books.values() for ro in book}

    def _prune_journal(self) -> None:
        """Forget journaled orders that are no longer in any book and whose
        fills are all sealed (nothing pending)."""
        if self.chain.pending_txs:
            return
        live = self._live_hashes()
        stale = [k for k, _ in self.chain.db.iterate(_JOURNAL) if k[-32:] not in live]
        if stale:
            with self.chain.db.write_batch() as batch:
                for k in stale:
                    batch.delete(k)

    def _restore_journal(self) -> None:
        """Replay journaled orders (arrival order) through the book."""
        for key, value in list(self.chain.db.iterate(_JOURNAL)):
            self._sequence = max(self._sequence, int.from_bytes(key[2:10], "big"))
            order = Order.decode(value[:57])
            try:
                self.send_order(order, value[57:122], value[122:].decode(), journal=False)
            except (err.InvalidTransaction, ValueError):
                self.chain.db.delete(key)
