"""JSON bodies with their numeric arrays parsed straight into numpy, by simdjson
(pysimdjson's `as_buffer`, which flattens an array of numbers into int64 or doubles in C++
without making a Python object per number).

The document comes back as Python values, except that every rectangular array of numbers
(not booleans) with at least `MIN_ARRAY_ELEMENTS` elements is a numpy array of its nested
shape: int64 when every number is an integer that fits, else float64. The codecs take
those as they take lists. Whatever this cannot say for sure (invalid JSON, the NaN and
Infinity literals, numbers past float64, integers past 2**53 among floats, ragged or mixed
arrays) is left to the caller or stays a list, so errors keep their wording: a list just as
orjson would have given it.

Every value is converted once, in time linear in the body: simdjson finds an array's element
by index or an object's value by key by scanning, so arrays of numbers and of scalars are
converted by one bulk call (`as_buffer`, `as_list`), arrays of arrays or objects by iterating
over them, and objects with many keys by `as_dict`. That the numpy arrays were nested as
their shapes is checked once for the whole body, on its bytes (`_rectangular`), and only
where that cannot tell, array by array.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

import numpy as np
import simdjson

MIN_ARRAY_ELEMENTS = 256
"""Smaller arrays stay lists: below this, Python lists cost less than the checks."""
MAX_DIMENSIONS = 32
"""Arrays nested deeper stay lists (numpy's limit in its 1.x versions)."""
MAX_OBJECT_KEYS = 64
"""Objects with more keys are converted in one call, their arrays as lists (simdjson finds
a key by scanning the object: looking up every key of a big one would take quadratic time)."""
_EXACT = 2.0**53  # integers past this do not survive a float64

_local = threading.local()


REUSE_BYTES = 1024 * 1024
"""Parsers are kept per thread for bodies up to this size; a bigger body gets a parser of
its own, freed after it (a parser keeps memory in proportion to the largest body it read)."""


def parse(body: bytes) -> Any:
    """The parsed body with big numeric arrays as numpy arrays, or None when simdjson
    refuses it (the caller parses it as before)."""
    parser = getattr(_local, "parser", None) if len(body) <= REUSE_BYTES else None
    if parser is None:
        parser = simdjson.Parser()
        if len(body) <= REUSE_BYTES:
            _local.parser = parser
    try:
        document = parser.parse(body)
    except (ValueError, UnicodeDecodeError, RuntimeError):
        _local.parser = None  # a fresh parser for the next body
        return None
    conversion = _Conversion()
    try:
        value = conversion.convert(document)
        if not conversion.arrays or _rectangular(body, value, conversion.values):
            return value
        # Each array checked on its own; a ragged one becomes the list it is, in place
        # (converting the document again would double a hostile body's cost).
        ragged = {
            id(array): node.as_list()
            for node, array in conversion.arrays
            if not _nested_as(node, array.shape)
        }
        return _as_lists(value, ragged) if ragged else value
    finally:
        conversion.arrays.clear()
        del document  # the parser is reused only once no proxy into it is left


class _Conversion:
    """simdjson's proxies -> Python values and numpy arrays. A numeric array's count of
    numbers is checked here, its nesting by the caller (`_rectangular` for the whole body,
    or `_nested_as` array by array). `arrays`: the numeric arrays made, each with its
    simdjson node; `values`: how many values were put into Python containers (roughly:
    what `_structure` walks)."""

    __slots__ = ("arrays", "values")

    def __init__(self) -> None:
        self.arrays: list[tuple[Any, np.ndarray]] = []
        self.values = 0

    def convert(self, node: Any) -> Any:
        if isinstance(node, simdjson.Object):
            self.values += len(node)
            if len(node) > MAX_OBJECT_KEYS:
                return node.as_dict()  # a key lookup scans the object: no proxy per key
            return {key: self.convert(node[key]) for key in node.keys()}  # noqa: SIM118
        if isinstance(node, simdjson.Array):
            return self.array(node)
        return node

    def array(self, node: Any) -> Any:
        """An array as numpy (when it is a big rectangular array of numbers) or as a list.
        Every element is converted once: by one bulk call (`as_buffer`, `as_list`) or, for
        arrays of objects and arrays, by iterating over it (never by index, which scans)."""
        if not len(node):
            return []
        head = node[0]  # the first element: no scan
        shape = [len(node)]
        first: Any = head
        while isinstance(first, simdjson.Array) and len(first) and len(shape) < MAX_DIMENSIONS:
            shape.append(len(first))
            first = first[0]
        if (
            isinstance(first, int | float)
            and not isinstance(first, bool)
            and math.prod(shape) >= MIN_ARRAY_ELEMENTS
        ):
            # Its numbers are read in bulk: the subtree is not looked at again, numpy or not.
            return self.numeric(node, shape, isinstance(first, int))
        self.values += len(node)
        if isinstance(head, simdjson.Array | simdjson.Object):
            return [self.convert(child) for child in node]
        return node.as_list()

    def numeric(self, node: Any, shape: list[int], integers: bool) -> Any:
        """`node` as an int64 or float64 array of `shape`, or as a list when it is not a
        rectangular array of numbers of that shape."""
        array = self._numeric(node, shape, integers)
        if isinstance(array, np.ndarray):
            self.arrays.append((node, array))
        else:
            self.values += math.prod(shape)
        return array

    def _numeric(self, node: Any, shape: list[int], integers: bool) -> Any:
        flat = None
        if integers:  # integers stay exact int64 (tf.Example int64 features)
            with contextlib.suppress(TypeError, ValueError):
                flat = np.frombuffer(node.as_buffer(of_type="i"), dtype=np.int64)
        if flat is None:
            try:
                flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
            except (TypeError, ValueError):
                return node.as_list()  # booleans, strings, nulls or objects among the numbers
        # as_buffer flattens whatever nesting it finds: the nesting must be the shape read
        # along the first elements, every row of its length and every number at the
        # innermost level.
        if flat.size != math.prod(shape):
            return node.as_list()
        if flat.dtype.kind == "f" and np.abs(flat).max() >= _EXACT:
            values = node.as_list()
            if _has_big_integers(values):
                return values
        return flat.reshape(shape)


def _as_lists(value: Any, lists: dict[int, Any]) -> Any:
    """`value` with each numpy array whose `id` is in `lists` replaced by its list there
    (containers changed in place)."""
    if isinstance(value, np.ndarray):
        return lists.get(id(value), value)
    if isinstance(value, dict):
        for key, item in value.items():
            if type(item) in _CONTAINERS:
                value[key] = _as_lists(item, lists)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if type(item) in _CONTAINERS:
                value[index] = _as_lists(item, lists)
    return value


def _nested_as(node: Any, shape: tuple[int, ...]) -> bool:
    """Whether an array of numbers is nested as a rectangular array of `shape`. Costly: its
    numbers are written back as text (`mini`), ~1 ms for 12,288 floats."""
    return _skeleton(node.mini) == _expected_skeleton(shape)


_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b"[],")))
_NOT_DOCUMENT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{},:"')))
STRUCTURE_BUDGET = 1024
"""Values of a document past this many are not compared with the body at once: its arrays
are checked one by one instead (as costly, but never more than that)."""


def _skeleton(text: bytes) -> bytes:
    """The brackets and commas of minified JSON text that holds only numbers."""
    return text.translate(None, _NOT_STRUCTURE)


def _expected_skeleton(shape: tuple[int, ...]) -> bytes:
    """`_skeleton` of a rectangular array of `shape`: `[[,,],[,,]]` for (2, 3)."""
    skeleton = b"[" + b"," * (shape[-1] - 1) + b"]"
    for size in reversed(shape[:-1]):
        skeleton = b"[" + b",".join([skeleton] * size) + b"]"
    return skeleton


def _rectangular(body: bytes, value: Any, values: int) -> bool:
    """Whether `body` is nested as `value` is, its numpy arrays rectangular. Both are
    compared as their brackets, braces, commas and colons outside strings (numbers,
    strings and literals write none): one pass over the body's bytes in C instead of
    writing each array's numbers back as text. False where it cannot tell (a backslash,
    which may escape a quote; a document of more than `STRUCTURE_BUDGET` values)."""
    if b"\\" in body or values > STRUCTURE_BUDGET:
        return False
    expected = _structure(value, [STRUCTURE_BUDGET])
    if expected is None:
        return False
    outside_strings = body.translate(None, _NOT_DOCUMENT_STRUCTURE).split(b'"')[::2]
    return b"".join(outside_strings) == expected


_CONTAINERS = frozenset((dict, list, np.ndarray))


def _structure(value: Any, budget: list[int]) -> bytes | None:
    """The brackets, braces, commas and colons `value` is written with as JSON (numpy arrays
    as rectangular nested lists), or None once more than `budget[0]` values are seen."""
    if isinstance(value, np.ndarray):
        return _expected_skeleton(value.shape)
    if isinstance(value, dict | list):
        budget[0] -= len(value) + 1
        if budget[0] < 0:
            return None
        items = value.values() if isinstance(value, dict) else value
        if _CONTAINERS.isdisjoint(map(type, items)):
            parts = [b""] * len(value)
        else:
            parts = []
            for item in items:
                part = _structure(item, budget)
                if part is None:
                    return None
                parts.append(part)
        if isinstance(value, dict):
            return b"{" + b",".join([b":" + part for part in parts]) + b"}"
        return b"[" + b",".join(parts) + b"]"
    return b""


def _has_big_integers(values: list[Any]) -> bool:
    """Whether nested lists hold integers past 2**53 (rare)."""
    stack = [values]
    while stack:
        items = stack.pop()
        for item in items:
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, int) and abs(item) >= _EXACT:
                return True
    return False
