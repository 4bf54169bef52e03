"""Group commit of the sequencer journal (acknowledge after the group's sync).

Without it every acknowledged order, cancel or withdrawal costs one synced
LevelDB write (an fsync) on the event loop before its answer. With it, the
sequencer only buffers each entry (``Sequencer.group_commit``); one task
writes everything buffered so far as one synced batch in a worker thread,
and every request waits, before its answer is sent, until the group holding
its entries is on disk. Entries that arrive while a group is being written
form the next group, so under load each fsync covers many requests and the
event loop never waits for the disk.

kill -9 loses nothing acknowledged: an answer leaves only after its
entries' group is synced, and groups are written in sequence order.
"""

from __future__ import annotations

import logging

import trio

from sequencer.sequencer import Sequencer

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.1
"""Pause before writing a group again after a store error."""
IDLE_SECONDS = 0.05
"""Longest an entry stays buffered when no request waits for it (entries
made outside JSON-RPC requests, e.g. L1 deposits)."""


class GroupCommit:
    """Writes the journal of ``sequencer`` in groups; see the module docstring.

    Usage: ``nursery.start_soon(commit.run)``; around each request:
    ``mark = commit.mark()``, dispatch, ``await commit.wait(mark)``.
    """

    def __init__(self, sequencer: Sequencer) -> None:
        self.sequencer = sequencer
        self._wake = trio.Event()
        self._written = trio.Event()
        self.groups = 0  # groups written
        self.entries = 0  # entries written in them

    def mark(self) -> int:
        """The journal's sequence number now (before a request runs)."""
        return self.sequencer.journal_sequence

    async def wait(self, mark: int) -> None:
        """Return once every journal entry made since ``mark`` is on disk
        (at once if there is none)."""
        seq = self.sequencer
        target = seq.journal_sequence
        if target <= mark:
            return
        while seq.synced_sequence < target:
            self._wake.set()
            await self._written.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Switch the sequencer to group commit and write groups until cancelled."""
        seq = self.sequencer
        seq.group_commit = True
        task_status.started()
        try:
            while True:
                with trio.move_on_after(IDLE_SECONDS):
                    await self._wake.wait()
                self._wake = trio.Event()
                group, sequence = seq.take_journal_group()
                if not group and seq.synced_sequence >= sequence:
                    continue
                if group:
                    try:
                        await trio.to_thread.run_sync(seq.write_journal_group, group)
                    except Exception:  # a store error: keep the entries, answer nobody yet
                        log.exception("writing %d journal entries failed (retrying)", len(group))
                        seq.journal_group_failed(group)
                        self._wake.set()
                        await trio.sleep(RETRY_SECONDS)
                        continue
                    self.groups += 1
                    self.entries += len(group)
                seq.journal_group_written(group, sequence)
                written, self._written = self._written, trio.Event()
                written.set()
        finally:
            self.flush()
            seq.group_commit = False

    def flush(self) -> None:
        """Write whatever is buffered now, on this thread (at shutdown)."""
        seq = self.sequencer
        group, sequence = seq.take_journal_group()
        if group:
            seq.write_journal_group(group)
        seq.journal_group_written(group, sequence)
