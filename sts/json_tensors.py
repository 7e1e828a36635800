"""JSON bodies with their numeric arrays parsed straight into numpy, by simdjson
(pysimdjson's `as_buffer`, which flattens an array of numbers into int64 or doubles in C++
without making a Python object per number).

The document comes back as Python values, except that every rectangular array of numbers
(not booleans) with at least `MIN_ARRAY_ELEMENTS` elements is a numpy array of its nested
shape: int64 when every number is an integer that fits, else float64. The codecs take
those as they take lists. Whatever this cannot say for sure (invalid JSON, the NaN and
Infinity literals, numbers past float64, integers past 2**53 among floats, ragged or mixed
arrays) is left to the caller or stays a list, so errors keep their wording.
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
        return {key: _convert(node[key]) for key in node.keys()}  # noqa: SIM118 - proxies
    if isinstance(node, simdjson.Array):
        array = _numeric(node)
        if array is not None:
            return array
        return [_convert(node[index]) for index in range(len(node))]
    return node


def _numeric(node: Any) -> np.ndarray | None:
    """`node` as a float64 array of its nested shape, or None."""
    shape: list[int] = []
    first: Any = node
    while isinstance(first, simdjson.Array):
        shape.append(len(first))
        if not shape[-1]:
            return None
        first = first[0]
    if isinstance(first, bool) or not isinstance(first, int | float):
        return None
    count = math.prod(shape)
    if count < MIN_ARRAY_ELEMENTS:
        return None
    flat = None
    if isinstance(first, int):  # integers stay exact int64 (tf.Example int64 features)
        with contextlib.suppress(TypeError, ValueError):
            flat = np.frombuffer(node.as_buffer(of_type="i"), dtype=np.int64)
    if flat is None:
        try:
            flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
        except (TypeError, ValueError):
            return None  # booleans, strings or nulls among the numbers
    # as_buffer flattens whatever nesting it finds: the count and every row's length must
    # agree with the shape read along the first elements.
    if flat.size != count or (len(shape) > 1 and not _rectangular(node, shape)):
        return None
    if flat.dtype.kind == "f" and np.abs(flat).max() >= _EXACT and _has_big_integers(node):
        return None
    return flat.reshape(shape)


def _rectangular(node: Any, shape: list[int]) -> bool:
    level = [node]
    for size in shape[:-1]:
        children: list[Any] = []
        for row in level:
            if len(row) != size:
                return False
            children.extend(row[index] for index in range(size))
        if not all(isinstance(child, simdjson.Array) for child in children):
            return False
        level = children
    return all(len(row) == shape[-1] for row in level)


def _has_big_integers(node: Any) -> bool:
    """Whether an array holds integer literals past 2**53 (rare: looked at as lists)."""
    values = node.as_list()
    stack = [values]
    while stack:
        items = stack.pop()
        for item in items:
            if isinstance(item, list):
                stack.append(item)
            elif isinstance(item, int) and abs(item) >= _EXACT:
                return True
    return False
