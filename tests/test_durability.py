"""Nothing acknowledged is ever lost: the sequencer journal across restarts.

Unit tests run the sequencer over a LevelDB store and "crash" it by closing
the store without sealing (what kill -9 leaves behind: every synced write,
nothing else), then open a new sequencer on the same store. The subprocess
test kills a real devnet with SIGKILL in the middle of a replay with
withdrawals and cancels in flight (3 kill points by default, 20 with
DERIVNET_SLOW=1).
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from node.chain import Chain
from node.client import quantity
from node.db import LevelDB
from node.signing import Signer, dev_keys
from node.transactions import Deposit
from sequencer.sequencer import _JOURNAL, OrderCancelled, Sequencer, UnknownOrder
from tests.test_sequencer import ALICE, BOB, DOMAIN, NOW, Clock, funded, signed

ORACLE = Signer(dev_keys(10)[1])


def _open(path: Path, clock: Clock | None = None, max_block_txs: int = 10_000) -> Sequencer:
    return Sequencer(Chain(LevelDB(str(path)), DOMAIN), clock or Clock(), max_block_txs)


def _crash(seq: Sequencer) -> None:
    """Stop without sealing: only what was synced to the store survives."""
    seq.chain.db.close()


def _pending(seq: Sequencer) -> tuple[Any, ...]:
    """What a restart must reproduce: pending txs, block time, book, withdrawal count."""
    chain = seq.chain
    book = [(ro.order_hash, ro.remaining) for b in seq.books.values() for ro in b]
    return (tuple(chain.pending_txs), chain.pending_timestamp, sorted(book),
            chain.state.system.withdrawal_count, chain.head.number)


def _journal(seq: Sequencer) -> list[bytes]:
    return [v[:1] for _, v in seq.chain.db.iterate(_JOURNAL)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    db = LevelDB(str(tmp_path / "l2"))
    seq, _ = funded(db)
    db.close()
    return tmp_path / "l2"


def test_each_kind_round_trips(store: Path) -> None:
    """An order that rests, one that fills, a cancel, an oracle price, a
    withdrawal and a deposit: after a crash the same pending block and book."""
    clock = Clock()
    seq = _open(store, clock)
    clock.t += 3
    keep = seq.send_order(*signed(ALICE, False, 166700, 5_000, salt=1))
    gone = seq.send_order(*signed(ALICE, False, 166800, 5_000, salt=2))
    seq.send_order(*signed(BOB, True, 166700, 2_000, salt=3), "IOC")
    seq.cancel_order(gone.order_hash, ALICE.sign_cancel(DOMAIN, gone.order_hash))
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, 1, 166650, int(NOW) + 1))
    seq.send_withdraw(BOB.withdraw(DOMAIN, BOB.address, 1_000_000, 0))
    seq.include_deposit(Deposit(2, ALICE.address, 7))
    before = _pending(seq)
    assert _journal(seq) == [b"O", b"O", b"O", b"C", b"T", b"T", b"T"]
    _crash(seq)

    clock.t += 100  # the restart is later: replay keeps the block's own time
    again = _open(store, clock)
    assert _pending(again) == before
    assert again.books[1].get(keep.order_hash).remaining == 3_000
    assert again.chain.state.markets[1].oracle_price == 166650
    assert again.chain.state.system.next_deposit == 3
    block = again.seal()
    assert block is not None and len(block.txs) == 4 and all(r.success for r in block.receipts)
    assert block.header.timestamp == int(NOW) + 3
    # sealed: only the resting order and the cancel (until its order expires) stay
    assert _journal(again) == [b"O", b"C"]
    again.chain.db.close()


def test_cancelled_order_never_comes_back(store: Path) -> None:
    seq = _open(store)
    r = seq.send_order(*signed(ALICE, False, 166621, 10_000))
    seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
    _crash(seq)  # no block sealed between the cancel and the restart

    for _ in range(2):  # and again after a clean seal + restart
        seq = _open(store)
        assert seq.books[1].get(r.order_hash) is None
        taker = seq.send_order(*signed(BOB, True, 166621, 10_000, salt=seq._sequence + 9), "IOC")
        assert taker.fills == [] and taker.status == "cancelled"
        with pytest.raises(OrderCancelled):  # anyone re-sending the signed order
            seq.send_order(*signed(ALICE, False, 166621, 10_000))
        with pytest.raises(UnknownOrder):
            seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
        seq.seal()
        _crash(seq)


def test_cancel_remembered_until_the_order_expires(store: Path) -> None:
    clock = Clock()
    seq = _open(store, clock)
    order = signed(ALICE, False, 166621, 10, expiry=int(NOW) + 30)
    r = seq.send_order(*order)
    seq.cancel_order(r.order_hash, ALICE.sign_cancel(DOMAIN, r.order_hash))
    seq.include_deposit(Deposit(2, ALICE.address, 1))
    seq.seal()
    assert _journal(seq) == [b"C"]
    clock.t += 31
    seq.include_deposit(Deposit(3, ALICE.address, 1))
    seq.seal()
    assert _journal(seq) == []
    with pytest.raises(Exception, match="expired"):
        seq.send_order(*order)
    seq.chain.db.close()


def test_acknowledged_withdrawal_keeps_its_id(store: Path) -> None:
    seq = _open(store)
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 1_000_000, 0))
    first = seq.chain.state.system.withdrawal_count - 1
    _crash(seq)  # before its block is sealed

    seq = _open(store)
    assert seq.chain.state.system.withdrawal_count == first + 1
    seq.send_withdraw(BOB.withdraw(DOMAIN, BOB.address, 2_000_000, 0))
    second = seq.chain.state.system.withdrawal_count - 1
    assert second == first + 1
    seq.seal()
    w1, w2 = seq.chain.head_state().withdrawal(first), seq.chain.head_state().withdrawal(second)
    assert (w1.account, w1.amount) == (ALICE.address, 1_000_000)
    assert (w2.account, w2.amount) == (BOB.address, 2_000_000)
    assert seq.chain.withdrawal_block(first) == seq.chain.withdrawal_block(second)
    seq.chain.db.close()


def test_arrival_order_is_kept_across_kinds(store: Path) -> None:
    """Deposit -> withdrawal that needs it -> a maker that then lacks margin
    is dropped by a taker: replayed in another order, the results differ."""
    seq = _open(store)
    carol = Signer(b"\x11" * 32)
    seq.include_deposit(Deposit(2, carol.address, 2_000_000_000))
    seq.send_withdraw(carol.withdraw(DOMAIN, carol.address, 1_500_000_000, 0))
    maker = seq.send_order(*signed(ALICE, False, 166600, 500_000))
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 9_500_000_000, 0))
    taker = seq.send_order(*signed(BOB, True, 166600, 500_000, salt=2), "IOC")
    assert taker.fills == [] and seq.books[1].get(maker.order_hash) is None
    late = seq.send_order(*signed(BOB, True, 166000, 1_000, salt=3))
    before = _pending(seq)
    _crash(seq)

    seq = _open(store)
    assert _pending(seq) == before
    assert seq.books[1].get(late.order_hash) is not None
    assert seq.chain.state.account(carol.address).collateral == 500_000_000
    seq.chain.db.close()


def test_crash_between_seal_and_prune_applies_nothing_twice(store: Path) -> None:
    """The block is written but the journal not pruned yet: sealed entries
    only rebuild the book (no second withdrawal, no IOC coming back)."""
    seq = _open(store)
    maker = seq.send_order(*signed(ALICE, False, 166600, 10_000))
    seq.send_order(*signed(BOB, True, 166700, 4_000, salt=2), "IOC")
    seq.send_withdraw(BOB.withdraw(DOMAIN, BOB.address, 1_000_000, 0))
    seq.send_oracle_price(ORACLE.oracle_price(DOMAIN, 1, 166650, int(NOW) + 1))
    seq.chain.seal(seq.l1_origin)  # the block, but not Sequencer.seal's prune
    after = _pending(seq)
    _crash(seq)

    seq = _open(store)
    assert _pending(seq) == after and seq.chain.pending_txs == []
    assert [ro.order_hash for ro in seq.books[1]] == [maker.order_hash]
    assert seq.books[1].get(maker.order_hash).remaining == 6_000
    assert _journal(seq) == [b"O"]  # the rest was sealed: dropped at restore
    seq.chain.db.close()


def test_seal_during_replay_then_crash_again(store: Path) -> None:
    """A restart with a smaller block limit seals in the middle of the replay;
    what stays pending is journaled under the next block, so a second crash
    replays exactly it."""
    seq = _open(store)
    seq.send_order(*signed(ALICE, False, 166600, 10_000))
    for i in range(5):
        seq.send_order(*signed(BOB, True, 166600, 100, salt=10 + i), "IOC")
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 1_000, 0))
    head = seq.chain.head.number
    _crash(seq)

    seq = _open(store, max_block_txs=3)
    assert seq.chain.head.number == head + 1 and len(seq.chain.pending_txs) == 3
    before = _pending(seq)
    _crash(seq)
    seq = _open(store, max_block_txs=3)
    assert _pending(seq) == before
    seq.seal()
    state = seq.chain.head_state()
    assert state.account(BOB.address).position(1).size == 500
    assert state.system.withdrawal_count == 1
    seq.chain.db.close()


def test_legacy_order_entries_are_upgraded(store: Path) -> None:
    from sequencer.sequencer import _encode_journal

    db = LevelDB(str(store))
    order, sig = signed(ALICE, False, 166621, 10)
    from node.eip712 import order_hash

    digest = order_hash(DOMAIN, order)
    db.put(_JOURNAL + (7).to_bytes(8, "big") + digest, _encode_journal(order, sig, "GTC"))
    db.close()
    seq = _open(store)
    assert seq.books[1].get(digest).remaining == 10
    assert [len(k) for k, _ in seq.chain.db.iterate(_JOURNAL)] == [10]
    seq.send_withdraw(ALICE.withdraw(DOMAIN, ALICE.address, 1, 0))
    assert [k[2:] for k, _ in seq.chain.db.iterate(_JOURNAL)][-1] == (8).to_bytes(8, "big")
    seq.chain.db.close()


# -- clients and idle keep-alive connections ----------------------------------------

class _ClosingServer:
    """HTTP/1.1 JSON-RPC server that answers the first request of each
    connection (keep-alive) and closes the connection, without an answer, on
    the second: what a client sees when the server's keep-alive timeout
    closes an idle connection just as the client reuses it."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answered = 0
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: Any) -> None:
        import json

        with conn:
            for n in range(2):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, body = data.split(b"\r\n\r\n", 1)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                while len(body) < length:
                    body += conn.recv(65536)
                if n == 1:
                    self.dropped += 1
                    return  # closed under the client's reused connection
                request = json.loads(body)
                answers = [{"jsonrpc": "2.0", "id": r["id"], "result": "0x2a"}
                           for r in (request if isinstance(request, list) else [request])]
                out = json.dumps(answers if isinstance(request, list) else answers[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: keep-alive\r\n"
                             + f"Content-Length: {len(out)}\r\n\r\n{out}".encode())
                self.answered += 1

    def close(self) -> None:
        self.sock.close()


def test_clients_resend_on_a_connection_closed_while_idle() -> None:
    from l1_stub.client import connect
    from node.client import L2Client

    server = _ClosingServer()
    try:
        with L2Client(server.url) as client:
            assert [client.block_number() for _ in range(3)] == [42, 42, 42]
            assert client.batch([("eth_blockNumber", [])]) == ["0x2a"]
        with connect(server.url) as w3:
            assert [w3.eth.block_number for _ in range(3)] == [42, 42, 42]
        assert server.dropped >= 4  # every reuse was closed under the client, then resent
    finally:
        server.close()


# -- kill -9 of a devnet process --------------------------------------------------

KEYS = dev_keys(10)
MAKER, TAKERS = Signer(KEYS[3]), [Signer(KEYS[4]), Signer(KEYS[5])]
VICTIM, PROBE = Signer(KEYS[7]), Signer(KEYS[8])
WITHDRAWERS = [Signer(KEYS[8]), Signer(KEYS[9])]
SAVER = KEYS[9]  # deposits and withdraws only: its collateral is a pure sum
USDC = 10**6
FAR = 2**40  # expiry of test orders (never reached, whatever time warps)


class Acks:
    """Everything the node acknowledged, across all kill points."""

    def __init__(self) -> None:
        self.fills: list[str] = []  # fill tx hashes answered by l2_sendOrder
        self.cancels: list[tuple[Any, bytes, bytes]] = []  # (order, signature, hash)
        self.withdrawals: dict[int, tuple[str, int]] = {}  # id -> (account, amount)
        self.paid: set[int] = set()
        self.tape_pos = 0


def _traffic(url: str, acks: Acks, trades: list[Any], stop: threading.Event) -> None:
    """Replay tape trades (maker GTC + taker IOC, oracle following the price)
    with a cancelled order every 3rd trade and a withdrawal every 4th, one
    request at a time, recording each answer; ends when the node dies."""
    from node.client import L2Client, RpcError, order_params
    from node.transactions import Order

    oracle = ORACLE
    try:
        with L2Client(url, timeout=10) as c:
            domain = c.domain
            market = c.call("l2_getMarkets", "pending")[0]
            price, oracle_ts = int(market["oraclePrice"]), quantity(market["oracleTime"])
            while not stop.is_set() and acks.tape_pos < len(trades):
                t = trades[acks.tape_pos]
                n = acks.tape_pos
                acks.tape_pos += 1
                if t.price != price:
                    price, oracle_ts = t.price, oracle_ts + 1
                    tx = oracle.oracle_price(domain, 1, price, oracle_ts)
                    c.call("l2_sendOraclePrice", {"market": 1, "price": str(price),
                                                  "timestamp": oracle_ts,
                                                  "signature": "0x" + tx.signature.hex()})
                taker = TAKERS[n % len(TAKERS)]
                m = Order(MAKER.address, 1, not t.taker_buys, t.price, t.size, t.trade_id * 2, FAR)
                tk = Order(taker.address, 1, t.taker_buys, t.price, t.size, t.trade_id * 2 + 1, FAR)
                c.call("l2_sendOrder", order_params(m, MAKER.sign_order(domain, m)[1]))
                out = c.call("l2_sendOrder", order_params(tk, taker.sign_order(domain, tk)[1],
                                                          "IOC"))
                acks.fills.extend(f["txHash"] for f in out["fills"])
                if n % 3 == 0:  # rests far above the market, then cancelled
                    v = Order(VICTIM.address, 1, False, t.price + 10_000, 1_000, t.trade_id, FAR)
                    digest, sig = VICTIM.sign_order(domain, v)
                    c.call("l2_sendOrder", order_params(v, sig))
                    c.cancel_order(VICTIM, digest)
                    acks.cancels.append((v, sig, digest))
                if n % 4 == 0:
                    who = WITHDRAWERS[n // 4 % 2]
                    try:
                        sent = c.withdraw(who, USDC)
                    except RpcError as exc:  # the nonce raced an unacknowledged one
                        assert exc.message.startswith("InvalidNonce"), exc
                        continue
                    acks.withdrawals[quantity(sent["withdrawalId"])] = ("0x" + who.address.hex(), USDC)
    except Exception:  # noqa: BLE001 - the node was killed under us
        return


def _deposit_async(l1_url: str, client: Any, amount: int) -> None:
    """Send faucet + approve + deposit for SAVER without waiting (in flight at the kill)."""
    from l1_stub.client import connect
    from node.wallet import rollup_client

    with connect(l1_url) as w3:
        rollup = rollup_client(client, w3)
        rollup.faucet(SAVER, amount)
        rollup.approve(SAVER, amount)
        rollup.deposit(SAVER, Signer(SAVER).address, amount)


def _wait(predicate: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _check(client: Any, w3: Any, acks: Acks, pay: bool) -> None:
    """After a restart: nothing acknowledged is lost, nothing pays twice
    (``pay``: finalize one more acknowledged withdrawal on L1)."""
    from l1_stub.client import TransactionReverted, wait_receipt
    from node.client import RpcError
    from node.wallet import finish_withdrawal, rollup_client

    rollup = rollup_client(client, w3)
    _wait(lambda: client.sync_status()["pending_txs"] == 0, "the restored block to be sealed")
    # every acknowledged fill is sealed, successfully
    for answer in client.batch([("l2_getFill", [h]) for h in acks.fills]):
        assert not isinstance(answer, RpcError), answer
        assert len(answer) == 1 and answer[0]["success"]
    # every acknowledged withdrawal exists exactly once, with its id
    on_chain: dict[int, tuple[str, int]] = {}
    while True:
        try:
            w = client.call("l2_getWithdrawal", len(on_chain))
        except RpcError:
            break
        on_chain[len(on_chain)] = (w["account"], int(w["amount"]))
    for wid, expected in acks.withdrawals.items():
        assert on_chain.get(wid) == expected, (wid, on_chain.get(wid), expected)
    for who in WITHDRAWERS:
        address = "0x" + who.address.hex()
        count = sum(1 for a, _ in on_chain.values() if a == address)
        assert quantity(client.get_account(who.address)["nonce"]) == count
    # every acknowledged cancel: not in the book, never filled, cannot come back
    calls = []
    for order, sig, digest in acks.cancels:
        calls.append(("l2_cancelOrder", [{"orderHash": "0x" + digest.hex(),
                                          "signature": "0x" + VICTIM.sign_cancel(
                                              client.domain, digest).hex()}]))
        calls.append(("l2_getFill", ["0x" + digest.hex()]))
        from node.client import order_params

        calls.append(("l2_sendOrder", [order_params(order, sig)]))
    answers = client.batch(calls)
    for i in range(0, len(answers), 3):
        cancel, fill, resend = answers[i: i + 3]
        assert isinstance(cancel, RpcError) and cancel.message.startswith("UnknownOrder"), cancel
        assert isinstance(fill, RpcError) and fill.code == -32001, fill
        assert isinstance(resend, RpcError) and resend.message.startswith("OrderCancelled"), resend
    if acks.cancels:  # a taker that crosses every cancelled order's price fills none of them
        top = max(o.price for o, _, _ in acks.cancels)
        out = client.send_order(PROBE, 1, True, top, 1_000, "IOC")
        cancelled = {"0x" + d.hex() for _, _, d in acks.cancels}
        makers = {f["makerOrderHash"] for f in out["fills"]}
        assert not makers & cancelled
    # deposits re-derived consistently: SAVER's collateral is deposits - withdrawals
    _wait(lambda: client.sync_status()["deposits_included"] >= rollup.deposit_count(),
          "L1 deposits to be included")
    _wait(lambda: client.sync_status()["pending_txs"] == 0, "deposits to be sealed")
    saver = "0x" + Signer(SAVER).address.hex()
    deposited = sum(e.amount for e in rollup.deposits(0, rollup.deposit_count())
                    if e.account.lower() == saver)
    withdrawn = sum(amount for a, amount in on_chain.values() if a == saver)
    assert int(client.get_account(saver)["collateral"]) == deposited - withdrawn
    # nothing pays twice on L1
    for wid in sorted(acks.paid):
        w = client.call("l2_getWithdrawal", wid)
        assert w["paid"]
        assert finish_withdrawal(client, w3, Signer(KEYS[2]), wid, timeout=30).already_paid
    if acks.paid:
        with pytest.raises(TransactionReverted, match="already paid"):
            wait_receipt(w3, rollup.finalize_withdrawal(
                KEYS[2], quantity(w["batch"]), wid, w["account"], w["recipient"], int(w["amount"]),
                [bytes.fromhex(x[2:]) for x in w["proof"]["siblings"]]), timeout=30)
    unpaid = sorted(set(acks.withdrawals) - acks.paid)
    if pay and unpaid:  # pay one more (warping over its batch's challenge window)
        wid = unpaid[0]
        account, amount = acks.withdrawals[wid]
        before = rollup.usdc_balance(account)
        r = finish_withdrawal(client, w3, Signer(KEYS[2]), wid, warp=True, timeout=60)
        assert r.l1_tx is not None and not r.already_paid
        assert rollup.usdc_balance(account) == before + amount
        acks.paid.add(wid)


def _kill_points(tmp_path: Path, kills: int, seed: int, pay_every: int) -> Acks:
    from l1_stub.client import connect
    from node.client import L2Client
    from node.replay import fund_accounts, read_tape
    from tests.devnet_process import TAPE, DevnetProcess

    rng = random.Random(seed)
    datadir, log = tmp_path / "data", tmp_path / "devnet.log"
    trades = read_tape(str(TAPE), 2, 4)
    acks = Acks()
    node = DevnetProcess(datadir, log)
    node.start()
    with L2Client(node.url) as client, connect(node.l1_url) as w3:
        fund_accounts(client, w3, [(MAKER, 50_000_000 * USDC), (VICTIM, 1_000_000 * USDC)]
                      + [(s, 10_000_000 * USDC) for s in TAKERS + WITHDRAWERS], timeout=60)
    for k in range(kills):
        stop = threading.Event()
        worker = threading.Thread(target=_traffic, args=(node.url, acks, trades, stop))
        worker.start()
        with L2Client(node.url) as client:
            _deposit_async(node.l1_url, client, (k + 1) * USDC)
        time.sleep(rng.uniform(0.3, 1.5))
        node.kill9()  # the worker is mid-request: some answer never comes
        worker.join(timeout=30)
        assert not worker.is_alive()
        restarted = DevnetProcess(datadir, log)
        restarted.port, restarted.l1_port = node.port, node.l1_port
        restarted.start()
        node = restarted
        with L2Client(node.url) as client, connect(node.l1_url) as w3:
            try:
                _check(client, w3, acks, pay=k % pay_every == 0)
            except BaseException:
                node.stop()
                raise
    node.stop()
    return acks


def test_kill9_with_withdrawals_and_cancels_in_flight(tmp_path: Path) -> None:
    """3 random kill points (20 with DERIVNET_SLOW=1) of a replay with
    withdrawals, cancels, oracle prices and L1 deposits in flight."""
    slow = os.environ.get("DERIVNET_SLOW") == "1"
    seed = int(os.environ.get("DERIVNET_SEED", time.time_ns() % 10**6))
    print(f"seed {seed}")
    acks = _kill_points(tmp_path, 20 if slow else 3, seed, pay_every=1 if slow else 3)
    assert acks.fills and acks.cancels and acks.withdrawals and acks.paid


# -- derivnet withdraw: resumable, own batch, pending nonces ------------------------

def test_withdraw_resumes_by_id_and_never_pays_twice(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from l1_stub.client import connect
    from node.cli import main
    from node.client import L2Client
    from node.wallet import deposit, finish_withdrawal, rollup_client, send_withdrawal
    from tests.devnet_process import DevnetProcess

    user = Signer(KEYS[6])
    node = DevnetProcess(None, tmp_path / "devnet.log")
    node.start()
    try:
        with L2Client(node.url) as client, connect(node.l1_url) as w3:
            rollup = rollup_client(client, w3)
            deposit(client, w3, user, 100 * USDC)
            # two quick withdrawals: nonces from the pending state do not collide
            first, _ = send_withdrawal(client, user, 3 * USDC)
            second, _ = send_withdrawal(client, user, 4 * USDC)
            assert second == first + 1
            level = client.call("l2_getWithdrawal", second)["status"]
            assert level in ("pending", "unsafe", "safe")  # known at once, sealed or not
            # "killed mid-wait": the first is resumed by id, after a later batch exists
            _wait(lambda: client.call("l2_getWithdrawal", second)["batch"] is not None,
                  "the withdrawals' batch on L1")
            tx = client.send_oracle_price(ORACLE, 1, 166601, int(time.time()) + 10**6)["txHash"]
            receipt = _wait(lambda: client.call("l2_getTransactionReceipt", tx),
                            "the oracle price sealed")
            later = int(receipt["blockNumber"], 16)
            _wait(lambda: client.sync_status()["safe_l2"]["number"] >= later,
                  "a later batch on L1")
            own = quantity(client.call("l2_getWithdrawal", first)["batch"])
            assert quantity(client.call("l2_getBatch", "latest")["index"]) > own
            messages: list[str] = []
            balance = rollup.usdc_balance("0x" + user.address.hex())
            nonce = client.get_account(user.address, "pending")["nonce"]
            r = finish_withdrawal(client, w3, user, first, warp=True, timeout=60,
                                  progress=lambda m, f: messages.append(m))
            assert r.l1_tx and not r.already_paid and r.amount == 3 * USDC
            assert rollup.usdc_balance("0x" + user.address.hex()) == balance + 3 * USDC
            assert any(f"in batch {own};" in m for m in messages), messages
            assert client.get_account(user.address, "pending")["nonce"] == nonce  # no new one
        # the CLI: resume the second, then again (already paid), then an unknown id
        cli = ["--account", "6", "--rpc", node.url, "--timeout", "60", "--json"]
        out = CliRunner().invoke(main, ["withdraw", "--id", hex(second), "--warp", *cli])
        assert out.exit_code == 0, out.output
        done = json.loads(out.output)
        assert done["withdrawal_id"] == hex(second) and done["l1_tx"] and not done["already_paid"]
        again = CliRunner().invoke(main, ["withdraw", "--id", str(second), *cli])
        assert again.exit_code == 0 and json.loads(again.output)["already_paid"]
        unknown = CliRunner().invoke(main, ["withdraw", "--id", "999", *cli])
        assert unknown.exit_code == 1 and "no withdrawal #999" in unknown.output
        both = CliRunner().invoke(main, ["withdraw", "5", "--id", "1", *cli])
        assert both.exit_code == 2
    finally:
        node.stop()
