"""Ledger state: leaf types, their keys and ABI encodings, and the ``State``
container over the sparse Merkle tree (docs/protocol.md, "State").

Leaves are frozen dataclasses. ``State`` is the only mutable thing: the STF
reads leaves through it and writes whole new leaves back; ``commit()``
writes the changed leaves into the tree and returns the new state root.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from node.crypto import keccak
from node.smt import SparseMerkleTree
from node.transactions import DEFAULT_MAX_LIQUIDATION_FEE_PPM

ACCOUNT_TYPES = ["int256", "uint64", "(uint32,int128,int256,int256,int256)[]"]
MARKETS_TYPES = [
    "(uint32,uint8,uint8,uint64,uint64,uint32,uint32,uint32,uint32,uint64,uint64,"
    "int256,uint64,int32,uint32,uint128,uint128,uint128)[]"
]
ORDER_TYPES = ["uint64"]
SYSTEM_TYPES = ["uint64", "uint64", "address", "address", "address", "int256", "int256"]
POSITION_BYTES = 160  # five ABI words: market, size, cost, funding_index, settled_funding

SYMBOLS_TYPES = ["(uint32,bytes16)[]"]
WITHDRAWAL_TYPES = ["uint64", "address", "address", "uint128"]

_OFFSET_0x60 = (0x60).to_bytes(32, "big")

MARKETS_KEY = keccak(b"\x02")
SYSTEM_KEY = keccak(b"\x04")
SYMBOLS_KEY = keccak(b"\x06")
SYMBOL_BYTES = 16


# Memos of the two keys hashed on every fill (pure functions; cleared when full).
_ACCOUNT_KEYS: dict[bytes, bytes] = {}
_ORDER_KEYS: dict[bytes, bytes] = {}
_KEY_MEMO_SIZE = 1 << 17


def account_key(address: bytes) -> bytes:
    """SMT key of an account leaf: keccak(0x01 || address). Memoized."""
    key = _ACCOUNT_KEYS.get(address)
    if key is None:
        if len(_ACCOUNT_KEYS) >= _KEY_MEMO_SIZE:
            _ACCOUNT_KEYS.clear()
        key = _ACCOUNT_KEYS[address] = keccak(b"\x01" + address)
    return key


def order_key(order_hash: bytes) -> bytes:
    """SMT key of an order's filled-size leaf: keccak(0x03 || order hash).
    Memoized (an order's leaf is read, then written, in the same block)."""
    key = _ORDER_KEYS.get(order_hash)
    if key is None:
        if len(_ORDER_KEYS) >= _KEY_MEMO_SIZE:
            _ORDER_KEYS.clear()
        key = _ORDER_KEYS[order_hash] = keccak(b"\x03" + order_hash)
    return key


def withdrawal_key(withdrawal_id: int) -> bytes:
    """SMT key of a withdrawal leaf: keccak(0x05 || id u64)."""
    return keccak(b"\x05" + withdrawal_id.to_bytes(8, "big"))


@dataclass(frozen=True, slots=True)
class Position:
    """A perpetual position: size (signed, market size units, long > 0),
    cost (signed USDC base units paid for the open size) and funding_index
    (the market's funding index, price units x ppm, it last settled at;
    docs/protocol.md "Funding"); settled_funding (signed USDC base units,
    cumulative funding settled on this position since it was opened,
    positive: the account paid; a flip keeps it, a close to 0 drops it)."""

    market: int
    size: int
    cost: int
    funding_index: int = 0
    settled_funding: int = 0


def _market_of(position: Position) -> int:
    return position.market


@dataclass(frozen=True, slots=True)
class Account:
    """collateral: USDC base units (cash model, see docs/protocol.md);
    nonce: next withdrawal nonce; positions sorted by market id."""

    collateral: int = 0
    nonce: int = 0
    positions: tuple[Position, ...] = ()

    def position(self, market: int) -> Position | None:
        for p in self.positions:
            if p.market == market:
                return p
        return None

    def with_position(self, pos: Position) -> Account:
        """Copy with ``pos`` replacing the market's position (dropped if size 0)."""
        return self.traded(0, pos)

    def traded(self, cash: int, pos: Position) -> Account:
        """Copy with collateral + ``cash`` and ``pos`` replacing the market's
        position (dropped if its size is 0): an account after a fill."""
        positions = self.positions
        if not positions or (len(positions) == 1 and positions[0].market == pos.market):
            return Account(self.collateral + cash, self.nonce, (pos,) if pos.size else ())
        rest = [p for p in positions if p.market != pos.market]
        if pos.size != 0:
            rest.append(pos)
        rest.sort(key=_market_of)
        return Account(self.collateral + cash, self.nonce, tuple(rest))

    def encode(self) -> bytes:
        """``abi.encode(int256 collateral, uint64 nonce, (uint32,int128,int256,int256,int256)[])``
        byte for byte (the hot path of every commit, so by hand rather than
        eth_abi; tests/test_encoding.py checks it against eth_abi). Raises
        OverflowError for a field out of its ABI type's range."""
        if not 0 <= self.nonce < 1 << 64:
            raise OverflowError("account nonce out of uint64 range")
        positions = self.positions
        out = (self.collateral.to_bytes(32, "big", signed=True) + self.nonce.to_bytes(32, "big")
               + _OFFSET_0x60 + len(positions).to_bytes(32, "big"))
        for p in positions:
            if not 0 <= p.market < 1 << 32 or not -(1 << 127) <= p.size < 1 << 127:
                raise OverflowError("position market or size out of range")
            out += (p.market.to_bytes(32, "big") + p.size.to_bytes(32, "big", signed=True)
                    + p.cost.to_bytes(32, "big", signed=True)
                    + p.funding_index.to_bytes(32, "big", signed=True)
                    + p.settled_funding.to_bytes(32, "big", signed=True))
        return out

    @classmethod
    def decode(cls, data: bytes) -> Account:
        """Inverse of ``encode``; raises ValueError on a malformed value."""
        if len(data) < 128 or data[64:96] != _OFFSET_0x60:
            raise ValueError("not an account leaf")
        n = int.from_bytes(data[96:128], "big")
        if len(data) != 128 + POSITION_BYTES * n:
            raise ValueError("account leaf length does not match its positions")
        positions = []
        for off in range(128, 128 + POSITION_BYTES * n, POSITION_BYTES):
            positions.append(Position(
                int.from_bytes(data[off:off + 32], "big"),
                int.from_bytes(data[off + 32:off + 64], "big", signed=True),
                int.from_bytes(data[off + 64:off + 96], "big", signed=True),
                int.from_bytes(data[off + 96:off + 128], "big", signed=True),
                int.from_bytes(data[off + 128:off + 160], "big", signed=True),
            ))
        return cls(int.from_bytes(data[0:32], "big", signed=True),
                   int.from_bytes(data[32:64], "big"), tuple(positions))


@dataclass(frozen=True, slots=True)
class Market:
    """A perpetual market's parameters and oracle price.

    price_decimals / size_decimals: a price unit is 10^-pd USDC per base unit,
    a size unit 10^-sd base asset; tick_size / step_size in those units;
    *_ppm: fractions in parts per million; oracle_price in price units,
    oracle_time in unix seconds; funding_index: cumulative funding, price
    units x ppm; funding_time: unix seconds of the last FundingTick (0: none
    yet); funding_rate_ppm: the last tick's clamped 8-hour rate, ppm;
    max_liquidation_fee_ppm: cap of the liquidation fee, ppm of the
    liquidation's notional; open_interest: size units, the sum of long sizes;
    oi_lower_cap / oi_upper_cap: open notional (USDC base units) where the
    initial margin starts / ends scaling up to 100% (upper 0: no scaling).
    """

    id: int
    price_decimals: int
    size_decimals: int
    tick_size: int
    step_size: int
    imf_ppm: int
    mmf_ppm: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    oracle_price: int = 0
    oracle_time: int = 0
    funding_index: int = 0
    funding_time: int = 0
    funding_rate_ppm: int = 0
    max_liquidation_fee_ppm: int = DEFAULT_MAX_LIQUIDATION_FEE_PPM
    open_interest: int = 0
    oi_lower_cap: int = 0
    oi_upper_cap: int = 0

    def with_open_interest(self, open_interest: int) -> Market:
        """Copy with ``open_interest`` (size units) replaced: a Fill,
        Liquidate or Deleverage's update (the positional constructor is
        faster than ``dataclasses.replace``, and runs on most fills)."""
        return Market(self.id, self.price_decimals, self.size_decimals, self.tick_size,
                      self.step_size, self.imf_ppm, self.mmf_ppm, self.maker_fee_ppm,
                      self.taker_fee_ppm, self.oracle_price, self.oracle_time,
                      self.funding_index, self.funding_time, self.funding_rate_ppm,
                      self.max_liquidation_fee_ppm, open_interest, self.oi_lower_cap,
                      self.oi_upper_cap)

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.id,
            self.price_decimals,
            self.size_decimals,
            self.tick_size,
            self.step_size,
            self.imf_ppm,
            self.mmf_ppm,
            self.maker_fee_ppm,
            self.taker_fee_ppm,
            self.oracle_price,
            self.oracle_time,
            self.funding_index,
            self.funding_time,
            self.funding_rate_ppm,
            self.max_liquidation_fee_ppm,
            self.open_interest,
            self.oi_lower_cap,
            self.oi_upper_cap,
        )


def encode_markets(markets: Mapping[int, Market]) -> bytes:
    return abi_encode(MARKETS_TYPES, [[markets[i].as_tuple() for i in sorted(markets)]])


def decode_markets(data: bytes) -> dict[int, Market]:
    (rows,) = abi_decode(MARKETS_TYPES, data)
    return {row[0]: Market(*row) for row in rows}


def symbol_bytes(symbol: str) -> bytes:
    """ASCII symbol -> bytes16, left-aligned and zero-padded; raises
    ValueError if it is not ASCII or longer than 16 bytes (no charset check:
    that is the STF's InvalidSymbol rule)."""
    raw = symbol.encode("ascii")
    if len(raw) > SYMBOL_BYTES:
        raise ValueError(f"symbol {symbol!r} is longer than {SYMBOL_BYTES} bytes")
    return raw.ljust(SYMBOL_BYTES, b"\x00")


def symbol_text(raw: bytes) -> str:
    """bytes16 -> symbol (trailing zero bytes stripped)."""
    return raw.rstrip(b"\x00").decode("ascii", errors="replace")


def encode_symbols(symbols: Mapping[int, bytes]) -> bytes:
    """Symbols leaf value: abi.encode((uint32 id, bytes16 symbol)[]) sorted by id."""
    return abi_encode(SYMBOLS_TYPES, [[(i, symbols[i]) for i in sorted(symbols)]])


def decode_symbols(data: bytes) -> dict[int, bytes]:
    (rows,) = abi_decode(SYMBOLS_TYPES, data)
    return {row[0]: bytes(row[1]) for row in rows}


@dataclass(frozen=True, slots=True)
class System:
    """next_deposit: next L1 queue index to credit; withdrawal_count: ids
    issued so far; oracle / fee_account / admin (signs ListMarket): 20-byte
    addresses; funding_pool: USDC base units of funding settled by payers and
    not yet paid to receivers, plus the rounding dust (docs/protocol.md
    "Funding"); insurance_fund: USDC base units, the one insurance fund of
    all markets, never negative (docs/protocol.md "Insurance fund")."""

    next_deposit: int
    withdrawal_count: int
    oracle: bytes
    fee_account: bytes
    admin: bytes
    funding_pool: int = 0
    insurance_fund: int = 0

    def encode(self) -> bytes:
        return abi_encode(
            SYSTEM_TYPES,
            [self.next_deposit, self.withdrawal_count, self.oracle, self.fee_account, self.admin,
             self.funding_pool, self.insurance_fund],
        )

    @classmethod
    def decode(cls, data: bytes) -> System:
        nd, wc, oracle, fee, admin, pool, fund = abi_decode(SYSTEM_TYPES, data)
        return cls(nd, wc, bytes.fromhex(oracle[2:]), bytes.fromhex(fee[2:]),
                   bytes.fromhex(admin[2:]), pool, fund)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """An L2 withdrawal awaiting payment on L1 (amount in USDC base units)."""

    id: int
    account: bytes
    recipient: bytes
    amount: int

    def encode(self) -> bytes:
        return abi_encode(WITHDRAWAL_TYPES, [self.id, self.account, self.recipient, self.amount])

    @classmethod
    def decode(cls, data: bytes) -> Withdrawal:
        wid, account, recipient, amount = abi_decode(WITHDRAWAL_TYPES, data)
        return cls(wid, bytes.fromhex(account[2:]), bytes.fromhex(recipient[2:]), amount)


def encode_filled(filled: int) -> bytes:
    """Order leaf value: abi.encode(uint64 filled)."""
    return filled.to_bytes(32, "big")


@dataclass
class State:
    """Mutable view of the ledger at ``root`` with a write-back cache.

    Reads go to the cache, then the tree at ``root``. Writes stay in the cache
    until ``commit()``, which encodes the changed leaves, updates the tree in
    one batch and returns the new root.
    """

    tree: SparseMerkleTree
    root: bytes
    _accounts: dict[bytes, Account] = field(default_factory=dict)
    _filled: dict[bytes, int] = field(default_factory=dict)
    _withdrawals: dict[int, Withdrawal] = field(default_factory=dict)
    _markets: dict[int, Market] | None = None
    _symbols: dict[int, bytes] | None = None
    _system: System | None = None
    _dirty_accounts: set[bytes] = field(default_factory=set)
    _dirty_orders: set[bytes] = field(default_factory=set)
    _dirty_withdrawals: set[int] = field(default_factory=set)
    _dirty_markets: bool = False
    _dirty_symbols: bool = False
    _dirty_system: bool = False

    # -- reads -----------------------------------------------------------
    def account(self, address: bytes) -> Account:
        acc = self._accounts.get(address)
        if acc is None:
            raw = self.tree.get(self.root, account_key(address))
            acc = Account.decode(raw) if raw is not None else Account()
            self._accounts[address] = acc
        return acc

    def filled(self, order_hash: bytes) -> int:
        value = self._filled.get(order_hash)
        if value is None:
            raw = self.tree.get(self.root, order_key(order_hash))
            value = int.from_bytes(raw, "big") if raw is not None else 0
            self._filled[order_hash] = value
        return value

    @property
    def markets(self) -> dict[int, Market]:
        if self._markets is None:
            raw = self.tree.get(self.root, MARKETS_KEY)
            self._markets = decode_markets(raw) if raw is not None else {}
        return self._markets

    @property
    def symbols(self) -> dict[int, bytes]:
        """Market id -> bytes16 symbol (the symbols leaf; empty if absent)."""
        if self._symbols is None:
            raw = self.tree.get(self.root, SYMBOLS_KEY)
            self._symbols = decode_symbols(raw) if raw is not None else {}
        return self._symbols

    def symbol_of(self, market_id: int) -> str:
        """The market's symbol as text; raises KeyError if it has none."""
        return symbol_text(self.symbols[market_id])

    def market_by_symbol(self, symbol: str) -> Market:
        """The listed market named ``symbol``; raises KeyError."""
        for market_id, raw in self.symbols.items():
            if symbol_text(raw) == symbol and market_id in self.markets:
                return self.markets[market_id]
        raise KeyError(f"unknown market symbol {symbol!r}")

    @property
    def system(self) -> System:
        if self._system is None:
            raw = self.tree.get(self.root, SYSTEM_KEY)
            if raw is None:
                raise LookupError("state has no system leaf (not a genesis-derived root)")
            self._system = System.decode(raw)
        return self._system

    def withdrawal(self, withdrawal_id: int) -> Withdrawal | None:
        w = self._withdrawals.get(withdrawal_id)
        if w is None:
            raw = self.tree.get(self.root, withdrawal_key(withdrawal_id))
            w = Withdrawal.decode(raw) if raw is not None else None
        return w

    # -- writes ----------------------------------------------------------
    def set_account(self, address: bytes, account: Account) -> None:
        self._accounts[address] = account
        self._dirty_accounts.add(address)

    def set_filled(self, order_hash: bytes, filled: int) -> None:
        self._filled[order_hash] = filled
        self._dirty_orders.add(order_hash)

    def set_market(self, market: Market) -> None:
        markets = dict(self.markets)
        markets[market.id] = market
        self._markets = markets
        self._dirty_markets = True

    def set_symbol(self, market_id: int, symbol: bytes) -> None:
        symbols = dict(self.symbols)
        symbols[market_id] = symbol
        self._symbols = symbols
        self._dirty_symbols = True

    def set_system(self, system: System) -> None:
        self._system = system
        self._dirty_system = True

    def add_withdrawal(self, withdrawal: Withdrawal) -> None:
        self._withdrawals[withdrawal.id] = withdrawal
        self._dirty_withdrawals.add(withdrawal.id)

    # -- commit ----------------------------------------------------------
    def dirty_items(self) -> dict[bytes, bytes | None]:
        """The pending leaf writes as {smt key: encoded value}."""
        items: dict[bytes, bytes | None] = {}
        for addr in self._dirty_accounts:
            items[account_key(addr)] = self._accounts[addr].encode()
        for h in self._dirty_orders:
            items[order_key(h)] = encode_filled(self._filled[h])
        for wid in self._dirty_withdrawals:
            items[withdrawal_key(wid)] = self._withdrawals[wid].encode()
        if self._dirty_markets:
            items[MARKETS_KEY] = encode_markets(self.markets)
        if self._dirty_symbols:
            items[SYMBOLS_KEY] = encode_symbols(self.symbols)
        if self._dirty_system:
            items[SYSTEM_KEY] = self.system.encode()
        return items

    def commit(self) -> bytes:
        """Write changed leaves to the tree; returns (and adopts) the new root."""
        items = self.dirty_items()
        if items:
            self.root = self.tree.update(self.root, items)
        self._dirty_accounts.clear()
        self._dirty_orders.clear()
        self._dirty_withdrawals.clear()
        self._dirty_markets = False
        self._dirty_symbols = False
        self._dirty_system = False
        return self.root

    def clear_cache(self) -> None:
        """Drop cached leaves (only valid when nothing is dirty)."""
        if self.dirty_items():
            raise RuntimeError("clear_cache with uncommitted writes")
        self._accounts.clear()
        self._filled.clear()
        self._withdrawals.clear()
        self._markets = None
        self._symbols = None
        self._system = None


def genesis_items(
    markets: Iterable[tuple[str, Market]], oracle: bytes, fee_account: bytes, admin: bytes
) -> dict[bytes, bytes]:
    """The leaves of a genesis state: markets, symbols and system.

    markets: (symbol, market) pairs; symbols are ASCII, at most 16 bytes.
    """
    pairs = list(markets)
    return {
        MARKETS_KEY: encode_markets({m.id: m for _, m in pairs}),
        SYMBOLS_KEY: encode_symbols({m.id: symbol_bytes(s) for s, m in pairs}),
        SYSTEM_KEY: System(0, 0, oracle, fee_account, admin).encode(),
    }
