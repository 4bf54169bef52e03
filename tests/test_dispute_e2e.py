"""The whole fraud-proof path on a devnet (issue 7): a faulty proposer posts
a wrong root, a challenger holding only L1 data disputes it, the defender
(the node) defends its faulty trace, the one-step prover decides, the batch
and later ones are deleted, and the node re-posts its honest blocks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from l1_stub.disputes import DisputeClient, Status
from node.client import L2Client
from node.replica import Replica, ReplicaConfig
from node.signing import Signer, dev_keys
from prover.challenger import Challenger
from tests.devnet_process import DevnetProcess

KEYS = dev_keys(10)
ORACLE = Signer(KEYS[1])
CHALLENGER_KEY = KEYS[9]


@pytest.fixture
def make_devnet(tmp_path: Path) -> Iterator[Callable[..., DevnetProcess]]:
    started: list[DevnetProcess] = []

    def start(**flags: str | None) -> DevnetProcess:
        dev = DevnetProcess(None, tmp_path / f"devnet{len(started)}.log", **flags)
        dev.start()
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()


def play(replica: Replica, challengers: list[Challenger], until: Callable[[], bool],
         timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("the dispute did not end in time")
        replica.sync()
        for c in challengers:
            c.step()
        time.sleep(0.3)


def test_wrong_oracle_root_is_disputed_deleted_and_reposted(make_devnet) -> None:
    dev = make_devnet(**{"--faulty-proposer": "oracle-price"})
    with L2Client(dev.url) as client:
        base = int(time.time())
        for i in range(5):
            client.send_oracle_price(ORACLE, "ETH-USD", 166_600 + i, base + i)
        replica = Replica(ReplicaConfig(l1_rpc=dev.l1_url, port=0))
        try:
            disputes = DisputeClient(replica.w3, replica.deployment)
            challenger = Challenger(replica, disputes, CHALLENGER_KEY)
            # wait for the faulty batch on L1 and its mismatch in the replica
            deadline = time.monotonic() + 60
            while not replica.mismatched:
                assert time.monotonic() < deadline, "no faulty batch seen"
                replica.sync()
                time.sleep(0.3)
            bad = replica.mismatched[0]
            info = replica.chain.batch(bad)
            steps = sum(len(replica.chain.block(n).txs)
                        for n in range(info.first_block, info.last_block + 1))

            def game_over() -> bool:
                return any(disputes.get_game(g).status != Status.ACTIVE
                           for g in range(disputes.game_count()))

            play(replica, [challenger], game_over)
            game = disputes.get_game(0)
            assert game.status == Status.CHALLENGER_WON and game.batch_index == bad
            own = [m for m in challenger.moves if m.game == 0]
            degree = disputes.degree()
            assert len(own) <= math.ceil(math.log(max(steps, 2), degree)) + 2, (own, steps, degree)
            assert [m.kind for m in own][0] == "open" and own[-1].kind in ("prove", "timeout")
            # the node re-posts honestly; the replica re-derives and everything matches
            deadline = time.monotonic() + 90
            while True:
                replica.sync()
                count = replica.rollup.batch_count()
                if (count > bad and not replica.mismatched
                        and client.sync_status()["batches_deleted"] >= 1):
                    break
                assert time.monotonic() < deadline, "the node did not re-post"
                time.sleep(0.5)
            assert replica.chain.head.header.state_root == bytes.fromhex(
                client.call("l2_getBlockByNumber", hex(replica.chain.head.number), False)
                ["stateRoot"][2:])
        finally:
            replica.close()
