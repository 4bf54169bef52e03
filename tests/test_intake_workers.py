"""Worker processes end with the process that started them, however it ends
(here kill -9): the node's signature workers (sequencer.intake) and the
replica's batch workers (node.sigverify.Prefetcher) leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.devnet_process import process_alive

ROOT = Path(__file__).resolve().parent.parent

_NODE = """
import os, sys
from node.eip712 import Domain
from sequencer.intake import SignaturePrefetch
prefetch = SignaturePrefetch(Domain(1, bytes(20)), workers=2)
prefetch.start()
print(" ".join(str(p) for p in prefetch._pool._processes), flush=True)
sys.stdin.read()
"""

_REPLICA = """
import sys
from node.sigverify import Prefetcher
prefetcher = Prefetcher(2)
prefetcher.collect(prefetcher.submit([(bytes(32), bytes(65))] * 2))
print(" ".join(str(p) for p in prefetcher.pool._processes), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("script", [_NODE, _REPLICA], ids=["intake", "prefetcher"])
def test_workers_exit_when_the_node_is_killed(script: str) -> None:
    with subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT))) as node:
        assert node.stdout is not None
        workers = [int(p) for p in node.stdout.readline().split()]
        assert len(workers) == 2 and all(process_alive(p) for p in workers)
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(process_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(process_alive(p) for p in workers)
