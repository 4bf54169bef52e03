"""L2 blocks: header, receipts, hashing and storage encoding (docs/protocol.md,
"L2 blocks")."""

from __future__ import annotations

from dataclasses import dataclass

import rlp
from eth_abi import encode as abi_encode
from rlp.codec import encode_raw

from node.crypto import ZERO_HASH, keccak
from node.merkle import merkle_root
from node.transactions import tx_hash

HEADER_TYPES = ["uint64", "bytes32", "uint64", "uint64", "bytes32", "bytes32", "bytes32"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """Outcome of one transaction: success, or the rule it broke (``error``
    is the InvalidTransaction class name, ``message`` its text). ``price``:
    the trade price (price units) of a successful transaction that trades at
    a price it does not carry (a Deleverage's bankruptcy price), else None.
    Only ``tx_hash`` and ``success`` enter the receipts root."""

    tx_hash: bytes
    success: bool
    error: str = ""
    message: str = ""
    price: int | None = None

    def leaf(self) -> bytes:
        return keccak(self.tx_hash + (b"\x01" if self.success else b"\x00"))


def _encode_receipt(r: Receipt) -> list[bytes]:
    """RLP items of a stored receipt: hash, status, error, message, and the
    price (minimal big-endian, at least one byte) when there is one."""
    items = [r.tx_hash, b"\x01" if r.success else b"", r.error.encode(), r.message.encode()]
    if r.price is not None:
        items.append(r.price.to_bytes(max(1, (r.price.bit_length() + 7) // 8), "big"))
    return items


def _decode_receipt(items: list[bytes]) -> Receipt:
    price = int.from_bytes(items[4], "big") if len(items) > 4 else None
    return Receipt(items[0], items[1] == b"\x01", items[2].decode(), items[3].decode(), price)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    number: int
    parent_hash: bytes
    timestamp: int
    l1_origin: int
    tx_root: bytes
    receipts_root: bytes
    state_root: bytes

    @property
    def hash(self) -> bytes:
        return keccak(
            abi_encode(
                HEADER_TYPES,
                [
                    self.number,
                    self.parent_hash,
                    self.timestamp,
                    self.l1_origin,
                    self.tx_root,
                    self.receipts_root,
                    self.state_root,
                ],
            )
        )


@dataclass(frozen=True, slots=True)
class Block:
    """A sealed L2 block: header, encoded transactions and their receipts."""

    header: BlockHeader
    txs: tuple[bytes, ...]
    receipts: tuple[Receipt, ...]

    @property
    def number(self) -> int:
        return self.header.number

    @property
    def hash(self) -> bytes:
        return self.header.hash

    def encode(self) -> bytes:
        """Storage encoding (RLP)."""
        h = self.header
        # rlp's raw encoder on bytes only (ints as big-endian, 0 as b""): the
        # same bytes as rlp.encode, without inferring a sedes per item
        return encode_raw(
            [
                [_int(h.number), h.parent_hash, _int(h.timestamp), _int(h.l1_origin),
                 h.tx_root, h.receipts_root, h.state_root],
                list(self.txs),
                [_encode_receipt(r) for r in self.receipts],
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> Block:
        header, txs, receipts = rlp.decode(data)
        number, parent, ts, origin, txr, rr, sr = header
        return cls(
            BlockHeader(
                rlp.sedes.big_endian_int.deserialize(number),
                parent,
                rlp.sedes.big_endian_int.deserialize(ts),
                rlp.sedes.big_endian_int.deserialize(origin),
                txr,
                rr,
                sr,
            ),
            tuple(txs),
            tuple(_decode_receipt(r) for r in receipts),
        )


def make_header(
    number: int,
    parent_hash: bytes,
    timestamp: int,
    l1_origin: int,
    txs: tuple[bytes, ...],
    receipts: tuple[Receipt, ...],
    state_root: bytes,
) -> BlockHeader:
    """Header with tx and receipts roots computed from the lists."""
    return BlockHeader(
        number=number,
        parent_hash=parent_hash,
        timestamp=timestamp,
        l1_origin=l1_origin,
        tx_root=merkle_root([tx_hash(t) for t in txs]),
        receipts_root=merkle_root([r.leaf() for r in receipts]),
        state_root=state_root,
    )


def genesis_block(state_root: bytes) -> Block:
    """Block 0: no transactions, the genesis state root, parent hash zero."""
    return Block(make_header(0, ZERO_HASH, 0, 0, (), (), state_root), (), ())


def _int(value: int) -> bytes:
    """RLP's big-endian integer bytes (0 is empty)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
