"""Key-value storage behind a small interface (after py-evm's eth/db).

Backends: ``MemoryDB`` (a dict, for tests and throwaway nodes) and
``LevelDB`` (plyvel). ``PrefixedDB`` namespaces keys so the state tree, the
block store and the rest share one LevelDB. ``write_batch()`` is the only
way to write several keys atomically: used as a context manager it commits
everything on a clean exit and nothing if the block raises. Batches are
write-only; reads inside the block see the committed data, not the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Protocol

import plyvel


class KeyValueWriter(Protocol):
    """Anything keys can be written to: a database or an open batch."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class WriteBatch(KeyValueWriter, Protocol):
    """An atomic batch: ``with db.write_batch() as batch: batch.put(k, v)``."""

    def __enter__(self) -> WriteBatch: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class KeyValueDB(KeyValueWriter, Protocol):
    """Byte keys to byte values; ``get`` returns None for a missing key."""

    def get(self, key: bytes) -> bytes | None: ...

    def write_batch(self) -> WriteBatch: ...

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def close(self) -> None: ...


class _MemoryBatch:
    """Buffers puts and deletes; applies them to the dict on a clean exit."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self._data = data
        self._ops: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self._ops[bytes(key)] = bytes(value)

    def delete(self, key: bytes) -> None:
        self._ops[bytes(key)] = None

    def __enter__(self) -> _MemoryBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ops, self._ops = self._ops, {}
        if exc_type is not None:
            return
        for key, value in ops.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value


class MemoryDB:
    """In-memory ``KeyValueDB`` backed by a dict."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._data[bytes(key)] = bytes(value)

    def delete(self, key: bytes) -> None:
        self._data.pop(key, None)

    def write_batch(self) -> WriteBatch:
        return _MemoryBatch(self._data)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order."""
        for key in sorted(k for k in self._data if k.startswith(prefix)):
            yield key, self._data[key]

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._data)


class LevelDB:
    """``KeyValueDB`` on LevelDB (plyvel), created if missing.

    With ``sync=True`` (the default) single puts and committed batches are
    fsynced before returning, so they survive a kill -9 or power loss.

    Tuned for a Merkle tree's writes (most keys and values are hashes): no
    compression (hashes do not compress; snappy only cost CPU) and a 64 MiB
    memtable, so background compaction rewrites far less (it took a whole
    core beside a replica deriving at full speed with the defaults), and a
    bloom filter (10 bits a key) so that reading an absent key, e.g. the
    flat-index entry of a new order's leaf, rarely searches a table.
    """

    def __init__(self, path: str, sync: bool = True) -> None:
        self._db = plyvel.DB(str(path), create_if_missing=True, compression=None,
                             write_buffer_size=64 << 20, lru_cache_size=64 << 20,
                             bloom_filter_bits=10)
        self._sync = sync

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value, sync=self._sync)

    def delete(self, key: bytes) -> None:
        self._db.delete(key, sync=self._sync)

    def write_batch(self) -> WriteBatch:
        # transaction=True: plyvel discards the batch if the with-block raises.
        batch: WriteBatch = self._db.write_batch(transaction=True, sync=self._sync)
        return batch

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order."""
        yield from self._db.iterator(prefix=prefix)

    def close(self) -> None:
        self._db.close()


class PrefixedBatch:
    """View of a batch (or any writer) that prepends ``prefix`` to keys."""

    def __init__(self, inner: KeyValueWriter, prefix: bytes) -> None:
        self._inner = inner
        self._prefix = prefix

    def put(self, key: bytes, value: bytes) -> None:
        self._inner.put(self._prefix + key, value)

    def delete(self, key: bytes) -> None:
        self._inner.delete(self._prefix + key)

    def __enter__(self) -> PrefixedBatch:
        enter = getattr(self._inner, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        exit_ = getattr(self._inner, "__exit__", None)
        if exit_ is None:
            return None
        result: bool | None = exit_(exc_type, exc, tb)
        return result


def unwrap_writer(batch: KeyValueWriter) -> tuple[KeyValueWriter, bytes]:
    """``(writer, prefix)``: the writer under any ``PrefixedBatch`` layers and
    the key prefix they add, so that a caller writing many keys can call the
    writer's own ``put`` with ``prefix + key`` (one call a key, not two)."""
    prefix = b""
    while isinstance(batch, PrefixedBatch):
        prefix = batch._prefix + prefix
        batch = batch._inner
    return batch, prefix


class PrefixedDB:
    """Namespace ``prefix`` inside ``db``: every key is stored as prefix + key.

    To write several namespaces in one atomic batch, open the batch on the
    shared db and wrap it per namespace::

        with shared.write_batch() as batch:
            tree.flush(state_db.wrap_batch(batch))
            blocks_db.wrap_batch(batch).put(key, value)

    ``close()`` does nothing: the shared db belongs to whoever opened it.
    """

    def __init__(self, db: KeyValueDB, prefix: bytes) -> None:
        self._db = db
        self._prefix = bytes(prefix)

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(self._prefix + key)

    def put(self, key: bytes, value: bytes) -> None:
        self._db.put(self._prefix + key, value)

    def delete(self, key: bytes) -> None:
        self._db.delete(self._prefix + key)

    def write_batch(self) -> WriteBatch:
        return PrefixedBatch(self._db.write_batch(), self._prefix)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        n = len(self._prefix)
        for key, value in self._db.iterate(self._prefix + prefix):
            yield key[n:], value

    def wrap_batch(self, batch: KeyValueWriter) -> PrefixedBatch:
        """A view of ``batch`` (opened on the innermost shared db) in this namespace."""
        if isinstance(self._db, PrefixedDB):
            batch = self._db.wrap_batch(batch)
        return PrefixedBatch(batch, self._prefix)

    def close(self) -> None:
        pass


class WriteBehindDB:
    """A ``KeyValueDB`` whose committed batches are written on a background
    thread, in commit order, while the caller goes on (LevelDB releases the
    GIL in its write, so a block's write overlaps the next block's work).

    ``write_batch()`` does not wait: a clean exit queues the batch's commit
    behind the earlier ones. Every read, put, delete and iterate through
    this object first waits for all queued commits (``wait()``), so it sees
    every batch committed before it. A failed background write raises at
    the next wait. Reads that go to ``inner`` directly (the state tree's own
    ``PrefixedDB``) do not wait: they must only read keys the queued batches
    do not change, and a writer that checks what is on disk before it
    writes (the tree's ``flush``) must call ``wait()`` first. Each batch
    stays atomic, so a kill -9 leaves a prefix of the committed batches.
    ``close()`` waits and stops the thread; it does not close ``inner``.
    """

    def __init__(self, inner: KeyValueDB) -> None:
        self.inner = inner
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-write-behind")
        self._last: Future[None] | None = None

    def wait(self) -> None:
        """Block until every queued commit is written; raises a failed one's error."""
        last = self._last  # done futures are kept: waits from other threads stay right
        if last is not None:
            last.result()

    def _queue(self, commit: Callable[[], None]) -> None:
        self._last = self._writer.submit(commit)

    def get(self, key: bytes) -> bytes | None:
        self.wait()
        return self.inner.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.wait()
        self.inner.put(key, value)

    def delete(self, key: bytes) -> None:
        self.wait()
        self.inner.delete(key)

    def write_batch(self) -> WriteBatch:
        return _BehindBatch(self, self.inner.write_batch())

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.wait()
        yield from self.inner.iterate(prefix)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._writer.shutdown()


class _BehindBatch:
    """A batch of ``WriteBehindDB``: puts go straight to the inner batch (no
    extra call per key); a clean exit queues its commit on the writer
    thread, a raise discards it."""

    put: Callable[[bytes, bytes], None]
    delete: Callable[[bytes], None]

    def __init__(self, owner: WriteBehindDB, inner: WriteBatch) -> None:
        self._owner = owner
        self._inner = inner.__enter__()
        self.put = self._inner.put
        self.delete = self._inner.delete

    def __enter__(self) -> _BehindBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._inner.__exit__(exc_type, exc, tb)
            return
        inner = self._inner
        previous = self._owner._last

        def commit() -> None:
            if previous is not None:
                previous.result()  # an earlier commit failed: write nothing after it
            inner.__exit__(None, None, None)

        self._owner._queue(commit)
