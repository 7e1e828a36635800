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
over them, and objects with many keys by `as_dict`.
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
    try:
        return _convert(document)
    finally:
        del document  # the parser is reused only once no proxy into it is left


def _convert(node: Any) -> Any:
    if isinstance(node, simdjson.Object):
        if len(node) > MAX_OBJECT_KEYS:
            return node.as_dict()  # a key lookup scans the object: no proxy per key
        return {key: _convert(node[key]) for key in node.keys()}  # noqa: SIM118 - proxies
    if isinstance(node, simdjson.Array):
        return _array(node)
    return node


def _array(node: Any) -> Any:
    """An array as numpy (when it is a big rectangular array of numbers) or as a list. Every
    element is converted once: by one bulk call (`as_buffer`, `as_list`) or, for arrays of
    objects and arrays, by iterating over it (never by index, which scans the array)."""
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
        return _numeric(node, shape, isinstance(first, int))
    if isinstance(head, simdjson.Array | simdjson.Object):
        return [_convert(child) for child in node]
    return node.as_list()


def _numeric(node: Any, shape: list[int], integers: bool) -> Any:
    """`node` as an int64 or float64 array of `shape`, or as a list when it is not a
    rectangular array of numbers of that shape."""
    flat = None
    if integers:  # integers stay exact int64 (tf.Example int64 features)
        with contextlib.suppress(TypeError, ValueError):
            flat = np.frombuffer(node.as_buffer(of_type="i"), dtype=np.int64)
    if flat is None:
        try:
            flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
        except (TypeError, ValueError):
            return node.as_list()  # booleans, strings, nulls or objects among the numbers
    # as_buffer flattens whatever nesting it finds: the nesting must be the shape read along
    # the first elements, every row of its length and every number at the innermost level.
    if flat.size != math.prod(shape) or _skeleton(node.mini) != _expected_skeleton(shape):
        return node.as_list()
    if flat.dtype.kind == "f" and np.abs(flat).max() >= _EXACT:
        values = node.as_list()
        if _has_big_integers(values):
            return values
    return flat.reshape(shape)


_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b"[],")))


def _skeleton(text: bytes) -> bytes:
    """The brackets and commas of minified JSON text that holds only numbers."""
    return text.translate(None, _NOT_STRUCTURE)


def _expected_skeleton(shape: list[int]) -> bytes:
    """`_skeleton` of a rectangular array of `shape`: `[[,,],[,,]]` for [2, 3]."""
    skeleton = b"[" + b"," * (shape[-1] - 1) + b"]"
    for size in reversed(shape[:-1]):
        skeleton = b"[" + b",".join([skeleton] * size) + b"]"
    return skeleton


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
