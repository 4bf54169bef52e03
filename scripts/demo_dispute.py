"""Demo of the whole fraud-proof path on a devnet, stage by stage:

1. a user deposits and trades; the proposer is told to forge a withdrawal
   (devnet_injectFault forged-withdrawal) and the user withdraws 100 USDC;
2. the batch goes to L1 with a state root holding a withdrawal nobody signed;
3. a challenger process holding only the L1 URL derives the chain, sees the
   wrong root, opens a dispute and plays it: dissection, then a one-step
   proof executed by the L1 verifier (the inspector prints the game);
4. the batch and every later one are deleted; the node re-posts its honest
   blocks;
5. after the challenge window (warped) the user's withdrawal is paid once;
   the forged one is in no surviving root and can never be paid.

    scripts/demo-dispute            # starts its own devnet and challenger
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l1_stub.client import connect  # noqa: E402
from l1_stub.disputes import DisputeClient, Status  # noqa: E402
from node.client import L2Client  # noqa: E402
from node.signing import Signer, dev_keys  # noqa: E402
from node.wallet import deposit, finish_withdrawal, rollup_client, send_withdrawal  # noqa: E402
from prover.inspect import dispute_json, render  # noqa: E402
from prover.trace import FORGED_RECIPIENT  # noqa: E402

USDC = 10**6
T0 = time.monotonic()


def stage(text: str) -> None:
    print(f"\n[t+{time.monotonic() - T0:5.1f}s] {text}", flush=True)


def wait(what: str, predicate, timeout: float = 180.0, every: float = 0.5):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo(rpc: str, l1_rpc: str, log_dir: Path) -> None:
    keys = dev_keys(10)
    user, maker = Signer(keys[6]), Signer(keys[7])
    with L2Client(rpc) as client, connect(l1_rpc) as w3:
        rollup = rollup_client(client, w3)
        stage("1. deposit 1,000 USDC for a user and a maker, trade, arm a forged withdrawal")
        deposit(client, w3, user, 1_000 * USDC)
        deposit(client, w3, maker, 1_000 * USDC)
        client.send_order(maker, "ETH-USD", False, 166600, 1_000)
        client.send_order(user, "ETH-USD", True, 166600, 1_000, "IOC")
        print("   traded 0.1 ETH at 1666.00")
        client.call("devnet_injectFault", {"kind": "forged-withdrawal"})
        wid, _ = send_withdrawal(client, user, 100 * USDC)
        print(f"   user withdrawal #{wid}: 100 USDC; the proposer will also forge #{wid + 1} "
              f"(1,000 USDC to 0x{FORGED_RECIPIENT.hex()})")

        stage("2. the proposer posts a batch with a wrong state root")

        def faulty_batch() -> int | None:
            if client.sync_status().get("faulty_proposer") is not None:
                return None  # not landed yet
            for index in range(int(client.call("l2_getBatch", "latest")["index"], 16) + 1):
                b = client.call("l2_getBatch", hex(index))
                if b and b.get("matches") is False:
                    return index + 1  # +1: batch 0 is falsy
            return None

        bad = wait("the faulty batch", faulty_batch) - 1
        b = client.call("l2_getBatch", hex(bad))
        print(f"   batch {bad} on L1 claims root {b['stateRoot'][:18]}.., the node's own root "
              f"after it is {b['derivedStateRoot'][:18]}..")

        stage("3. a challenger with only the L1 URL derives, disputes and plays")
        disputes = DisputeClient(w3, rollup.deployment)
        log = open(log_dir / "challenger.log", "ab")  # noqa: SIM115 - closed below
        challenger = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "challenger", "--l1-rpc", l1_rpc,
             "--port", str(free_port())],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait("the dispute", lambda: disputes.game_count() > 0, timeout=90)
            print("   dispute 0 opened")
            wait("the verdict", lambda: disputes.get_game(0).status != Status.ACTIVE, timeout=180)
            print(render(dispute_json(disputes, 0)))
            if disputes.get_game(0).status != Status.CHALLENGER_WON:
                raise SystemExit("the challenger did not win")

            stage("4. the batch and later ones are deleted; the node re-posts honest blocks")
            status = wait("the re-post", lambda: (lambda s: s if s["batches_deleted"] >= 1 and
                                                 (s.get("latest_batch") or {}).get("index", -1)
                                                 >= bad else None)(client.sync_status()))
            print(f"   batches deleted: {status['batches_deleted']}; batch {bad} re-posted with "
                  f"root 0x{rollup.get_batch(bad).state_root.hex()[:16]}..")

            stage("5. after the challenge window (warped), the user's withdrawal is paid once")
            me = "0x" + user.address.hex()
            before = rollup.usdc_balance(me)
            r = finish_withdrawal(client, w3, user, wid, warp=True, timeout=180)
            after = rollup.usdc_balance(me)
            print(f"   withdrawal #{wid} paid in L1 tx {r.l1_tx}: user L1 balance "
                  f"{before / USDC:,.2f} -> {after / USDC:,.2f}")
            again = finish_withdrawal(client, w3, user, wid, timeout=30)
            print(f"   finishing it again pays nothing (already paid: {again.already_paid})")
            forged = rollup.withdrawal_paid(wid + 1)
            print(f"   forged withdrawal #{wid + 1} paid: {forged} (it is in no surviving root)")
        finally:
            challenger.terminate()
            challenger.wait(timeout=10)
            log.close()
    stage(f"done in {time.monotonic() - T0:.0f} s")


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from devnet_process import DevnetProcess  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        node = DevnetProcess(None, Path(tmp) / "devnet.log", **{"--block-time": "0.25",
                                                                 "--batch-interval": "2"})
        node.start()
        try:
            demo(node.url, node.l1_url, Path(tmp))
        except BaseException:
            print(f"--- devnet log ---\n{(Path(tmp) / 'devnet.log').read_text()[-3000:]}")
            challenger_log = Path(tmp) / "challenger.log"
            if challenger_log.exists():
                print(f"--- challenger log ---\n{challenger_log.read_text()[-3000:]}")
            raise
        finally:
            node.stop()


if __name__ == "__main__":
    main()
