"""The sequencer: takes orders, cancels, oracle prices, withdrawals and L1
deposits, matches orders into fills, applies them to the chain's pending
state and seals blocks.

Everything the sequencer acknowledges (orders that rest or fill, cancels,
withdrawals, oracle prices) and every L1 deposit it includes is written to
one ordered journal in the store before the call returns (``_journal``), so
a crash (kill -9) loses nothing acknowledged: on restart the journal is
replayed in arrival order against the stored head state and rebuilds the
same book and the same pending block (same fills, same withdrawal ids).
Layout: docs/protocol.md "Sequencer journal".
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from node import exceptions as err
from node.blocks import Block, Receipt
from node.chain import Chain
from node.eip712 import cancel_digest, order_hash
from node.sigverify import signer_of
from node.transactions import (
    BODY_BYTES,
    DecodeError,
    Deleverage,
    Deposit,
    Fill,
    FundingTick,
    Liquidate,
    ListMarket,
    OraclePrice,
    Order,
    SettleFunding,
    Transaction,
    Withdraw,
    decode_tx,
    encode_tx,
    tx_type,
)
from sequencer.batcher import BLOCK_HEADER_BYTES, ROLLUP_MAX_BATCH_BYTES, ROLLUP_MAX_STEPS
from sequencer.book import (
    BookError,
    Match,
    OrderBook,
    RemoveReason,
    RestingOrder,
    StopMatching,
)
from sequencer.validation import check_order

_JOURNAL = b"j:"
# journal entry kinds (first byte of the value)
_ORDER = b"O"  # order.encode() | signature (65) | time in force (ASCII)
_CANCEL = b"C"  # order hash (32) | order expiry (u64) | cancel signature (65)
_TX = b"T"  # encode_tx(tx): Withdraw, OraclePrice, Deposit, ... (dispatched by type byte)
_LEGACY_KEY_BYTES = 2 + 8 + 32  # before kinds: b"j:" | sequence | order hash -> order entry


class UnknownOrder(err.InvalidTransaction):
    """No live order with this hash in the book."""


class InvalidCancelSignature(err.InvalidTransaction):
    """A cancel not signed by the order's account."""


class OrderRejectedByBook(err.InvalidTransaction):
    """The book refused the order (duplicate, post-only would cross, bad time in force)."""


class OrderCancelled(err.InvalidTransaction):
    """The order was cancelled; it cannot be sent again (until it expires)."""


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
        self.l1_origin = chain.head.header.l1_origin
        self.frozen = False
        # (pending tx count, batch bytes of the pending block) as last counted
        self._pending_size = (0, BLOCK_HEADER_BYTES)
        self.books = {m: OrderBook(m) for m in chain.state.markets}
        self._sequence = 0
        # journal key -> (market, order hash) of an order entry, None for other kinds
        self._journaled: dict[bytes, tuple[int, bytes] | None] = {}
        # cancelled order hash -> its expiry; cancel entries stay until then
        self._cancelled: dict[bytes, int] = {}
        self._cancel_expiries: list[tuple[int, bytes, bytes]] = []  # (expiry, key, hash) heap
        self._replay_time: int | None = None  # set while the journal is replayed
        self._replay_key = b""
        # group commit (sequencer.commit.GroupCommit sets group_commit): entries
        # are buffered and written by one synced batch per group
        self.group_commit = False
        self._unsynced: list[tuple[bytes, bytes]] = []  # buffered entries, in order
        self._not_durable: set[bytes] = set()  # keys buffered or being written
        self._restore_journal()
        self.synced_sequence = self._sequence  # entries 1..this are on disk

    # -- orders ----------------------------------------------------------
    def _now(self) -> int:
        now = int(self.clock()) if self._replay_time is None else self._replay_time
        self.chain.open_block(now)
        return self.chain.pending_timestamp

    def send_order(
        self, order: Order, signature: bytes, time_in_force: str = "GTC", journal: bool = True
    ) -> OrderResult:
        """Validate, match and (GTC) rest ``order``; fills go to the pending block.

        Raises DecodeError (malformed) or InvalidTransaction (a rule, see
        sequencer.validation.check_order, plus OrderRejectedByBook and OrderCancelled).
        An order that rested, filled or took makers out of the book is journaled.
        """
        self._check_live()
        now = self._now()
        state = self.chain.state
        digest = order_hash(self.chain.domain, order)
        if digest in self._cancelled:
            raise OrderCancelled(f"order 0x{digest.hex()} was cancelled")
        remaining = check_order(state, order, signature, digest, now)
        book = self.books.get(order.market)
        if book is None:  # a market listed after __init__ by a block not from us
            book = self.books[order.market] = OrderBook(order.market)
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

        removed: list[tuple[RestingOrder, RemoveReason]] = []  # makers dropped on the way
        try:
            matches: list[Match] = book.match(
                order, signature, digest, remaining, now, time_in_force, accept, removed
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
        if journal and (resting or fills or removed):
            key = self._journal(_ORDER, _encode_journal(order, signature, time_in_force))
            self._journaled[key] = (order.market, digest)
        if len(self.chain.pending_txs) >= self.max_block_txs:
            self.seal()
        return OrderResult(digest, status, order.size - left, left if resting else 0, fills)

    def cancel_order(self, hash_: bytes, signature: bytes) -> RestingOrder:
        """Remove a resting order; the Cancel must be signed by its account.

        The cancel is journaled before this returns and the order hash is
        remembered until the order expires, so the order never comes back
        (not after a restart, not when sent again: OrderCancelled).
        Raises UnknownOrder or InvalidCancelSignature, changing nothing.
        """
        for book in self.books.values():
            ro = book.get(hash_)
            if ro is not None:
                digest = cancel_digest(self.chain.domain, ro.order.account, hash_)
                if signer_of(digest, signature) != ro.order.account:
                    raise InvalidCancelSignature("cancel is not signed by the order's account")
                self._now()
                book.cancel(hash_)
                expiry = ro.order.expiry
                key = self._journal(_CANCEL, hash_ + expiry.to_bytes(8, "big") + signature)
                self._remember_cancel(key, hash_, expiry)
                return ro
        raise UnknownOrder(f"no resting order 0x{hash_.hex()}")

    def _remember_cancel(self, key: bytes, hash_: bytes, expiry: int) -> None:
        self._cancelled[hash_] = expiry
        heapq.heappush(self._cancel_expiries, (expiry, key, hash_))

    # -- other transactions ----------------------------------------------
    def send_oracle_price(self, tx: OraclePrice) -> Receipt:
        """Apply an oracle price to the pending block and journal it."""
        self._now()
        receipt = self._apply(tx)
        self._journal_tx(tx)
        return receipt

    def send_funding_tick(self, tx: FundingTick) -> Receipt:
        """Apply a funding tick to the pending block and journal it (as an
        oracle price: a broken rule raises and changes nothing)."""
        self._now()
        receipt = self._apply(tx)
        self._journal_tx(tx)
        return receipt

    def send_liquidate(self, tx: Liquidate) -> Receipt:
        """Apply a Liquidate to the pending block and journal it; if the
        liquidator's order rests in the book, its remaining size drops by
        ``tx.size`` (the STF grew its filled leaf). A broken rule raises
        and changes nothing (docs/protocol.md "Liquidation")."""
        self._check_live()
        self._now()
        receipt = self._apply(tx)
        self._reduce_resting(tx)
        self._journal_tx(tx)
        return receipt

    def _reduce_resting(self, tx: Liquidate) -> None:
        book = self.books.get(tx.order.market)
        if book is None:
            return
        digest = order_hash(self.chain.domain, tx.order)
        ro = book.get(digest)
        if ro is not None:
            book.reduce(digest, min(tx.size, ro.remaining))

    def send_deleverage(self, tx: Deleverage) -> Receipt:
        """Apply a Deleverage to the pending block and journal it
        (docs/protocol.md "Deleverage"); raises and changes nothing on a
        broken rule."""
        self._check_live()
        self._now()
        receipt = self._apply(tx)
        self._journal_tx(tx)
        return receipt

    def send_settle_funding(self, tx: SettleFunding) -> Receipt:
        """Apply a SettleFunding to the pending block and journal it."""
        self._check_live()
        self._now()
        receipt = self._apply(tx)
        self._journal_tx(tx)
        return receipt

    def send_withdraw(self, tx: Withdraw) -> Receipt:
        """Apply a withdrawal to the pending block and journal it; its id is
        the pending state's withdrawal count before it. Raises RollupFrozen
        on a frozen Rollup."""
        self._check_live()
        self._now()
        receipt = self._apply(tx)
        self._journal_tx(tx)
        return receipt

    def send_list_market(self, tx: ListMarket) -> Receipt:
        """Apply a ListMarket, open the market's book and seal the block at
        once (an acknowledged listing is stored before the call returns)."""
        self._now()
        receipt = self._apply(tx)
        self.books.setdefault(tx.market, OrderBook(tx.market))
        self.seal()
        return receipt

    def include_deposit(self, tx: Deposit) -> Receipt:
        """Include an L1 deposit; journaled too (not acknowledged to anyone,
        but later entries may rely on it, so replay keeps it in its place)."""
        self._now()
        receipt = self._apply(tx)
        self._journal_tx(tx)
        return receipt

    # -- journal -----------------------------------------------------------
    def _journal(self, kind: bytes, payload: bytes) -> bytes:
        """Append one entry and return its key; synced to disk before it
        returns (LevelDB ``sync=True``), so the caller may acknowledge.

        Key: b"j:" | sequence (u64, arrival order). Value: kind (1 byte) |
        pending block number (u64) | pending block timestamp (u64, unix s) |
        payload. The one place journal bytes are written. Nothing is written
        while the journal is replayed.

        With ``group_commit`` the entry is only buffered: the caller must not
        acknowledge it before ``synced_sequence`` reaches ``journal_sequence``
        (sequencer.commit.GroupCommit writes each group with one synced
        LevelDB batch).
        """
        if self._replay_time is not None:
            return self._replay_key
        self._sequence += 1
        key = _JOURNAL + self._sequence.to_bytes(8, "big")
        head = self.chain.head.number
        value = (kind + (head + 1).to_bytes(8, "big")
                 + self.chain.pending_timestamp.to_bytes(8, "big") + payload)
        if self.group_commit:
            self._unsynced.append((key, value))
            self._not_durable.add(key)
        else:
            self.chain.db.put(key, value)
            self.synced_sequence = self._sequence
        return key

    @property
    def journal_sequence(self) -> int:
        """Sequence number of the latest journal entry (0: none yet)."""
        return self._sequence

    def take_journal_group(self) -> tuple[list[tuple[bytes, bytes]], int]:
        """The buffered entries (key, value), oldest first, and the sequence
        number they reach; the buffer starts empty again."""
        group, self._unsynced = self._unsynced, []
        return group, self._sequence

    def write_journal_group(self, group: list[tuple[bytes, bytes]]) -> None:
        """Write ``group`` with one synced batch (safe from a worker thread:
        it touches only the store)."""
        with self.chain.db.write_batch() as batch:
            for key, value in group:
                batch.put(key, value)

    def journal_group_written(self, group: list[tuple[bytes, bytes]], sequence: int) -> None:
        """Record that ``group`` (reaching ``sequence``) is on disk."""
        for key, _ in group:
            self._not_durable.discard(key)
        self.synced_sequence = max(self.synced_sequence, sequence)

    def journal_group_failed(self, group: list[tuple[bytes, bytes]]) -> None:
        """Put back a group whose write failed, ahead of newer entries."""
        self._unsynced[:0] = group

    def _journal_tx(self, tx: Transaction) -> None:
        key = self._journal(_TX, encode_tx(tx))
        self._journaled[key] = None

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

    def _prune_journal(self) -> None:
        """Forget entries whose effects are all sealed and that are not needed
        to rebuild the book: everything but the entries of orders still
        resting and the cancels of orders not yet expired (at the head's
        timestamp). Runs after a seal, when nothing is pending.
        Entries not on disk yet (group commit) are left for a later prune, so
        a group written after this cannot bring a deleted entry back.
        """
        if self.chain.pending_txs:
            return
        waiting = self._not_durable
        stale = [k for k, where in self._journaled.items()
                 if (where is None or self.books[where[0]].get(where[1]) is None)
                 and k not in waiting]
        now = self.chain.head.header.timestamp
        heap = self._cancel_expiries
        later = []
        while heap and heap[0][0] <= now:
            item = heapq.heappop(heap)
            if item[1] in waiting:
                later.append(item)
                continue
            stale.append(item[1])
            if self._cancelled.get(item[2], now + 1) <= now:
                del self._cancelled[item[2]]
        for item in later:
            heapq.heappush(heap, item)
        if not stale:
            return
        with self.chain.db.write_batch() as batch:
            for k in stale:
                batch.delete(k)
                self._journaled.pop(k, None)

    def _restore_journal(self) -> None:
        """Replay the journal in arrival order against the head state.

        Entries of the pending block (block number head + 1) are replayed
        as they first ran, at their recorded timestamp: orders match again
        into the same fills, transactions apply again (same withdrawal ids).
        Entries of sealed blocks only rebuild the book (a resting order goes
        back with what is left of it, a cancel removes it again); their
        transactions are already in the state. An entry that no longer
        applies (filled, expired) is deleted.
        """
        db = self.chain.db
        head = self.chain.head.number
        self._upgrade_legacy_journal()
        replayed: list[tuple[bytes, bytes]] = []  # pending entries since the last seal
        for key, value in list(db.iterate(_JOURNAL)):
            self._sequence = max(self._sequence, int.from_bytes(key[2:10], "big"))
            kind, block = value[:1], int.from_bytes(value[1:9], "big")
            timestamp, payload = int.from_bytes(value[9:17], "big"), value[17:]
            self._replay_key = key
            self._replay_time = max(timestamp, self.chain.head.header.timestamp)
            seen = self.chain.head.number
            try:
                kept = self._replay(kind, payload, sealed=block <= head)
            except (err.InvalidTransaction, BookError, DecodeError, ValueError):
                kept = False
            finally:
                self._replay_time = None
            if not kept:
                db.delete(key)
            elif block > head:
                replayed.append((key, value))
            if self.chain.head.number != seen:  # sealed during the replay (size limit)
                replayed.clear()
        if self.chain.head.number != head and replayed:
            # what is pending now belongs to the block after the new head
            with db.write_batch() as batch:
                for key, value in replayed:
                    batch.put(key, value[:1] + (self.chain.head.number + 1).to_bytes(8, "big")
                              + value[9:])

    def _upgrade_legacy_journal(self) -> None:
        """Rewrite order entries of the first layout (key b"j:" | sequence |
        order hash, value = order entry payload) as pending order entries."""
        db = self.chain.db
        legacy = [(k, v) for k, v in db.iterate(_JOURNAL) if len(k) == _LEGACY_KEY_BYTES]
        if not legacy:
            return
        prefix = (self.chain.head.number + 1).to_bytes(8, "big") \
            + self.chain.head.header.timestamp.to_bytes(8, "big")
        with db.write_batch() as batch:
            for key, value in legacy:
                batch.delete(key)
                batch.put(key[:10], _ORDER + prefix + value)

    def _replay(self, kind: bytes, payload: bytes, sealed: bool) -> bool:
        """Re-run one journal entry; True if it is still needed."""
        key = self._replay_key
        if kind == _ORDER:
            order, signature = Order.decode(payload[:57]), payload[57:122]
            tif = payload[122:].decode()
            digest = order_hash(self.chain.domain, order)
            if sealed:  # checked when it arrived; its fills are in the state
                remaining = order.size - self.chain.state.filled(digest)
                if (tif == "IOC" or remaining <= 0 or order.expiry <= self._now()
                        or order.market not in self.books):
                    return False
                self.books[order.market].add_resting(order, signature, digest, remaining)
            else:
                self.send_order(order, signature, tif, journal=False)
            self._journaled[key] = (order.market, digest)
            return True
        if kind == _CANCEL:
            hash_, expiry = payload[:32], int.from_bytes(payload[32:40], "big")
            for book in self.books.values():
                book.cancel(hash_)
            self._remember_cancel(key, hash_, expiry)
            return True
        if kind == _TX:
            if sealed:
                return False  # already in the head state
            tx = decode_tx(payload)
            if isinstance(tx, Withdraw):
                self.send_withdraw(tx)
            elif isinstance(tx, OraclePrice):
                self.send_oracle_price(tx)
            elif isinstance(tx, Deposit):
                self.include_deposit(tx)
            elif isinstance(tx, Liquidate):  # the book's resting order shrinks again
                self._now()
                self._apply(tx)
                self._reduce_resting(tx)
                self._journaled[key] = None
            else:  # another transaction type journaled with _journal_tx
                self._now()
                self._apply(tx)
                for market in self.chain.state.markets:
                    self.books.setdefault(market, OrderBook(market))
                self._journaled[key] = None
            return True
        raise ValueError(f"unknown journal entry kind {kind!r}")
