"""Big JSON bodies parsed in parser processes, so that one 50 MB request does not hold the
interpreter (and with it every other request) for the second its parse takes.

A body of `BIG_BODY_BYTES` or more goes to one of a few long-lived child processes
(`python -m sts.big_bodies`, importing only orjson, simdjson and numpy). The child parses
it (numbers straight into numpy by `sts.json_tensors`), turns every other rectangular array
of numbers (or booleans) with at least `MIN_ARRAY_ELEMENTS` elements into a numpy array,
and sends back the rest of the document as JSON plus the arrays' raw bytes. Nothing is
pickled either way: the frames are lengths, JSON and raw little-endian values (float64,
int64 or bool), read with `np.frombuffer`. The parent thread waits on a pipe (the
interpreter is free meanwhile) and only copies bytes.

Whatever the child cannot say for sure (a body orjson refuses, numbers that need Python's
parser, a child that died) is parsed in the calling thread as before (`PARSE_HERE`), so
errors keep their wording. After a big body the parent and the child hand freed memory
back to the system (`malloc_trim` on glibc).

The children end with the server: on Linux they are killed when it dies, however it dies
(`PR_SET_PDEATHSIG`); when it exits, idle ones close and busy ones are killed, and none
starts after.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from typing import IO, Any

import numpy as np
import orjson

from sts import json_tensors

BIG_BODY_BYTES = 4 * 1024 * 1024
"""Bodies this large or larger are parsed in a parser process (about 40 ms of parsing
in-process on this machine's cores: the most one request may hold the others)."""
MIN_ARRAY_ELEMENTS = 1024
"""Smaller arrays stay lists: the structure of a document is left as it was."""
WORKERS = 2
"""Parser processes, started on the first big body; more big bodies at once queue."""

CHILD_NICENESS = 10
"""How much lower the parser processes' priority is than the server's."""
MMAP_BYTES = 1024 * 1024
"""Blocks this large or larger are mapped on their own (`return_big_blocks`)."""

PARSE_HERE: Any = object()
"""`parse` could not parse the body in a child: parse it in this thread."""

_FRAME = 8  # every frame starts with its length, a little-endian uint64
_DTYPES = {"f8": np.dtype("<f8"), "i8": np.dtype("<i8"), "b1": np.dtype("bool")}


# ---------------------------------------------------------------- the child's side


def _arrays_of(document: Any) -> tuple[Any, list[tuple[list[Any], np.ndarray]]]:
    """The document with its big numeric arrays replaced by null, and (path, array) pairs."""
    found: list[tuple[list[Any], np.ndarray]] = []
    return _walk(document, [], found), found


def _walk(node: Any, path: list[Any], found: list[tuple[list[Any], np.ndarray]]) -> Any:
    # A plain function, not a closure calling itself: that would be a reference cycle
    # keeping every array alive until the garbage collector runs.
    if isinstance(node, dict):
        return {key: _walk(value, [*path, key], found) for key, value in node.items()}
    if isinstance(node, np.ndarray):
        found.append((path, node))
        return None
    if isinstance(node, list):
        array = _numeric(node)
        if array is not None:
            found.append((path, array))
            return None
        return [_walk(value, [*path, index], found) for index, value in enumerate(node)]
    return node


def _numeric(node: list[Any]) -> np.ndarray | None:
    """`node` as an array when it is a big rectangular array of numbers or of booleans."""
    leaf: Any = node
    count = 1
    while isinstance(leaf, list) and leaf:
        count *= len(leaf)
        leaf = leaf[0]
    if count < MIN_ARRAY_ELEMENTS or isinstance(leaf, list):
        return None
    if not isinstance(leaf, int | float):  # bool is an int
        return None
    try:
        array = np.asarray(node)
    except (ValueError, TypeError):
        return None  # ragged: the codecs word that
    if array.dtype.str[1:] not in _DTYPES:
        return None  # strings, nulls, integers past 64 bits: the codecs word those
    if array.dtype.kind == "f" and array.size and np.abs(array).max() >= 2.0**53:
        # float() of integer JSON numbers past 2**53 rounds them: leave such arrays to the
        # codecs, which convert integers exactly.
        return None
    return array


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The child's loop: a body in, `{"document", "arrays"}` JSON and raw arrays out, or
    `{"here": true}` when the parent should parse it itself. The child runs at a lower
    priority: on a server pinned to one core it then takes the core only while the event
    loop has nothing to do."""
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICENESS)
    # Ctrl-C reaches the whole process group: the child ends when the server closes its
    # input, not with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return_big_blocks()
    while True:
        head = stdin.read(_FRAME)
        if len(head) < _FRAME:
            return
        body = stdin.read(int.from_bytes(head, "little"))
        try:
            parsed = json_tensors.parse(body)
            if parsed is None:
                parsed = orjson.loads(body)
            document, arrays = _arrays_of(parsed)
            del parsed
            del body
            reply = orjson.dumps(
                {
                    "document": document,
                    "arrays": [
                        {"path": path, "dtype": array.dtype.str[1:], "shape": list(array.shape)}
                        for path, array in arrays
                    ],
                }
            )
        except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
            arrays, reply = [], b'{"here": true}'
        chunks: list[Any] = [reply]
        chunks += [np.ascontiguousarray(a, a.dtype.newbyteorder("<")) for _, a in arrays]
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            stdout.write(len(view).to_bytes(_FRAME, "little"))
            stdout.write(view)
        stdout.flush()
        del arrays, chunks, reply
        trim()


# ---------------------------------------------------------------- the parent's side


_PARENT_ENV = "STS_BIG_BODIES_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """In a parser process: be killed when the server ends, however it ends (Linux's parent
    death signal; elsewhere the child still ends when its input closes)."""
    if _libc is not None:
        with contextlib.suppress(AttributeError):
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    parent = os.environ.get(_PARENT_ENV)
    if parent and os.getppid() != int(parent):
        os._exit(0)  # the server ended before the signal was asked for


# The parent death signal comes when the *thread* that started the child ends: children are
# started by one thread that lives as long as the server, not by the (pruned) worker threads.
_spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sts-big-bodies")


def _start_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sts.big_bodies"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            _PARENT_ENV: str(os.getpid()),
        },
    )


class _Child:
    def __init__(self) -> None:
        self.process = _spawner.submit(_start_process).result()
        _children.add(self)

    def parse(self, body: bytes) -> Any:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(len(body).to_bytes(_FRAME, "little"))
        stdin.write(body)
        stdin.flush()
        header = bytes(_read_frame(stdout))
        reply = orjson.loads(header)
        if reply.get("here"):
            return PARSE_HERE
        document = reply["document"]
        for entry in reply["arrays"]:
            raw = _read_frame(stdout)
            array = np.frombuffer(raw, dtype=_DTYPES[entry["dtype"]]).reshape(entry["shape"])
            weakref.finalize(array, trim)
            document = _put(document, entry["path"], array)
        return document

    def close(self) -> None:
        """End the child: it leaves its loop when its input closes."""
        _children.discard(self)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _read_exactly(stream: IO[bytes], size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = stream.readinto(view[done:])  # type: ignore[attr-defined]
        if not got:
            raise EOFError("the parser process ended")
        done += got
    return buffer


def _read_frame(stream: IO[bytes]) -> bytearray:
    return _read_exactly(stream, int.from_bytes(_read_exactly(stream, _FRAME), "little"))


def _put(document: Any, path: list[Any], value: np.ndarray) -> Any:
    if not path:
        return value
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


_idle: queue.SimpleQueue[_Child | None] = queue.SimpleQueue()
"""Idle children; None once the server is ending (each waiter puts it back for the next)."""
_children: set[_Child] = set()
"""Every running child, idle or busy."""
_started = 0
_closing = threading.Event()
"""Set once the server is ending: no parser process starts after."""
_lock = threading.Lock()


def parse(body: bytes) -> Any:
    """The parsed body, its big numeric arrays as numpy arrays (float64, int64 or bool), or
    `PARSE_HERE`. Blocks the calling (worker) thread, not the interpreter."""
    global _started
    with _lock:
        if _closing.is_set():
            return PARSE_HERE
        if not _started:
            return_big_blocks()
        if _idle.empty() and _started < WORKERS:
            try:
                _idle.put(_Child())
            except RuntimeError:  # the interpreter is ending: no new threads
                _close_locked()
                return PARSE_HERE
            _started += 1
    child = _idle.get()
    if child is None:
        _idle.put(None)  # for the next waiter
        return PARSE_HERE
    try:
        document = child.parse(body)
    except (OSError, EOFError, ValueError, KeyError, orjson.JSONDecodeError):
        child.close()
        document = PARSE_HERE  # this body is parsed here
        with _lock:
            if _closing.is_set():
                return document  # no restarts once the server is ending
            try:
                child = _Child()  # a fresh one for the next body
            except RuntimeError:
                _close_locked()
                return document
    with _lock:
        if _closing.is_set():
            child.close()
            return document
        _idle.put(child)
    return document


@atexit.register
def shutdown() -> None:
    """End every parser process: the idle ones close, the busy ones are killed (their
    bodies are parsed in the server's threads, if it still waits for them). Big bodies
    that come after are parsed in the calling thread."""
    with _lock:
        _close_locked()


def _close_locked() -> None:
    global _started
    _closing.set()
    while not _idle.empty():
        child = _idle.get()
        if child is not None:
            child.close()
    for busy in list(_children):  # their threads see the pipe end and parse here
        with contextlib.suppress(OSError):
            busy.process.kill()
    _started = 0
    _idle.put(None)  # wakes the threads waiting for a child


def return_big_blocks() -> None:
    """Allocate blocks of `MMAP_BYTES` or more with their own mappings, so that they go back
    to the system when freed (glibc otherwise raises this threshold to the largest block
    freed so far, up to 32 MB, and keeps big bodies' buffers in its heaps)."""
    if _libc is not None:
        with contextlib.suppress(AttributeError):
            _libc.mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)


def trim() -> None:
    """Hand freed heap memory back to the system (glibc's `malloc_trim`; nothing elsewhere)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_libc() -> Any:
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _find_libc()
_malloc_trim = None if _libc is None else _libc.malloc_trim
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


if __name__ == "__main__":
    die_with_parent()
    serve(sys.stdin.buffer, sys.stdout.buffer)
