"""Demo in real time: deposit 1,000 USDC, trade, withdraw 400 and watch the
L1 balance move only once the 60 s challenge window has passed.

    scripts/demo-withdraw                 # starts its own devnet (devnet preset)
    scripts/demo-withdraw --rpc URL       # uses a running devnet
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from l1_stub.client import connect  # noqa: E402
from node.client import L2Client  # noqa: E402
from node.signing import Signer, dev_keys  # noqa: E402
from node.wallet import deposit, rollup_client, withdraw  # noqa: E402

USDC = 10**6


def demo(rpc: str) -> None:
    keys = dev_keys(10)
    user, maker = Signer(keys[8]), Signer(keys[9])
    with L2Client(rpc) as client, connect(client.config["l1_rpc_url"]) as w3:
        rollup = rollup_client(client, w3)
        me = "0x" + user.address.hex()
        print(f"user {me}; challenge window {client.config['challenge_window']} s of L1 time")
        deposit(client, w3, user, 1_000 * USDC)
        deposit(client, w3, maker, 1_000 * USDC)
        print("deposited 1,000 USDC each for the user and a market maker")
        client.send_order(maker, "ETH-USD", False, 166600, 1_000)
        fill = client.send_order(user, "ETH-USD", True, 166600, 1_000, "IOC")
        print(f"traded: bought 0.1 ETH at 1666.00 ({fill['status']})")
        start_l1 = rollup.usdc_balance(me)
        print(f"L1 USDC balance before the withdrawal: {start_l1 / USDC:,.2f}")
        t0 = time.monotonic()
        last = [0.0]

        def show(message: str, fraction: float | None) -> None:
            if time.monotonic() - last[0] >= 5:
                last[0] = time.monotonic()
                bal = rollup.usdc_balance(me)
                print(f"  t+{time.monotonic() - t0:5.1f}s  {message:60s} L1 balance "
                      f"{bal / USDC:,.2f}")

        r = withdraw(client, w3, user, 400 * USDC, timeout=600, progress=show)
        end_l1 = rollup.usdc_balance(me)
        print(f"withdrawal #{r.withdrawal_id} finalized on L1 in tx {r.l1_tx} after "
              f"{time.monotonic() - t0:.1f} s")
        print(f"L1 USDC balance after: {end_l1 / USDC:,.2f} (+{(end_l1 - start_l1) / USDC:,.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rpc", default=None, help="a running devnet's L2 JSON-RPC URL")
    a = p.parse_args()
    if a.rpc:
        demo(a.rpc)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from devnet_process import DevnetProcess  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        node = DevnetProcess(None, Path(tmp) / "devnet.log", **{"--block-time": "0.25",
                                                                 "--batch-interval": "2"})
        node.start()
        try:
            demo(node.url)
        finally:
            node.stop()


if __name__ == "__main__":
    main()
