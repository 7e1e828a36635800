"""TF 1 SavedModels run as TensorFlow Serving runs them: in a `tf.compat.v1` Session.

A SavedModel without a TF 2 object graph (`SavedModelBuilder`, Estimator exports) is a
graph, not a set of functions. TF Serving loads it into a session and runs a signature by
feeding and fetching the tensor names its `SignatureDef` gives, so any tensor named there
can be fed (the output of a `ParseExample`, say) and the graph, not the signature's static
shape, decides which shapes it accepts. TF 2's `tf.saved_model.load` instead wraps such a
graph in functions with fixed input shapes, refusing requests TF Serving answers, and
fails on some exports altogether. (TF Serving: `servables/tensorflow/predict_util.cc`,
which calls `Session::Run` with the signature's tensor names.)

Each signature gets one `Session::MakeCallable` handle at load: a call then skips the
Python feed handling of `Session.run` (its per-call parsing of the feed dict, and its
static-shape check, which TF Serving's C++ `Session::Run` does not make), and it is safe
from several threads at once, like `Session.run`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sts.errors import BackendError, InvalidInput

logger = logging.getLogger("sts.backends.tensorflow")


def has_object_graph(meta_graph: Any) -> bool:
    """Whether a MetaGraphDef was written by TF 2 (`tf.saved_model.save`, Keras export);
    TF's own loader makes the same test to choose between its two load paths."""
    return bool(meta_graph.HasField("object_graph_def"))


def fed_by_name(info: Any) -> bool:
    """A `TensorInfo` that names one dense tensor (not a sparse or composite encoding)."""
    return bool(info.WhichOneof("encoding") == "name")


class SessionRunner:
    """One TF 1 SavedModel in its own graph and session; signatures run by tensor name.

    `signatures` maps a signature name to (input alias -> tensor name, output alias ->
    tensor name). Process-wide settings (threads, soft placement, GPU memory) come from
    TensorFlow's context, which a session created without a config adopts; `device` pins
    every op of the graph there (its recorded devices are cleared first).
    """

    def __init__(
        self,
        tf: Any,
        path: Path,
        tags: Sequence[str],
        device: str | None,
        signatures: Mapping[str, tuple[Mapping[str, str], Mapping[str, str]]],
    ) -> None:
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.eager import context

        v1 = tf.compat.v1
        self._graph = tf.Graph()
        # What tf.config set (threads, soft placement, GPU memory and visibility), as the
        # ConfigProto a TF 1 session takes; Session(config=None) would adopt the same.
        self.config = context.context().config
        self._session = v1.Session(graph=self._graph, config=self.config)
        self._calls: dict[str, tuple[list[str], list[str], Callable[..., list[np.ndarray]]]] = {}
        try:
            _quiet_loader_notice(tf)
            placed = tf.device(device) if device else contextlib.nullcontext()
            with self._graph.as_default(), placed:
                v1.saved_model.loader.load(
                    self._session, list(tags), str(path), clear_devices=device is not None
                )
            for name, (inputs, outputs) in signatures.items():
                feeds = list(inputs)
                fetch_names = list(dict.fromkeys(outputs.values()))  # two aliases, one fetch
                options = config_pb2.CallableOptions(
                    feed=[inputs[a] for a in feeds], fetch=fetch_names
                )
                # Session.make_callable with a feed list falls back to Session.run; this is
                # the Session::MakeCallable handle it would use without one.
                handle = self._session._make_callable_from_options(options)
                order = [fetch_names.index(outputs[a]) for a in outputs]
                self._calls[name] = (feeds, list(outputs), _picker(handle, order))
        except BaseException:
            self.close()
            raise

    def run(self, name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feed `inputs` (by alias, exactly the signature's) and fetch every output.

        Raises TensorFlow's errors as they are (`InvalidArgumentError` for a shape or value
        the graph refuses); the backend maps them."""
        if name not in self._calls:
            raise BackendError(f"signature {name!r} is not loaded")
        feeds, outputs, call = self._calls[name]
        unknown = sorted(a for a in inputs if a not in feeds)
        if unknown:
            # TF Serving's wording (servables/tensorflow/predict_util.cc)
            raise InvalidInput(
                f"input tensor alias not found in signature: {', '.join(unknown)}. Inputs "
                f"expected to be in the set {{{','.join(feeds)}}}."
            )
        missing = [a for a in feeds if a not in inputs]
        if missing:
            raise InvalidInput(f"signature {name!r} needs inputs {missing}")
        results = call(*(inputs[a] for a in feeds))
        return dict(zip(outputs, results, strict=True))

    def session_options(self) -> dict[str, Any]:
        """The session's own options, read back from the ConfigProto it was built with."""
        config = self.config
        return {
            "inter_op_parallelism_threads": config.inter_op_parallelism_threads,
            "intra_op_parallelism_threads": config.intra_op_parallelism_threads,
            "allow_soft_placement": config.allow_soft_placement,
            "log_device_placement": config.log_device_placement,
            "allow_growth": config.gpu_options.allow_growth,
            "visible_device_list": config.gpu_options.visible_device_list,
        }

    def close(self) -> None:
        self._calls = {}
        self._session.close()


def _picker(
    handle: Callable[..., list[np.ndarray]], order: list[int]
) -> Callable[..., list[np.ndarray]]:
    def call(*args: np.ndarray) -> list[np.ndarray]:
        fetched = handle(*args)
        return [fetched[i] for i in order]

    return call


class _LoaderNotice(logging.Filter):
    """Drops the notice TF 1's loader logs that it is deprecated (it is how TF Serving
    loads these graphs, and sts means it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "loader_impl) is deprecated" not in record.getMessage()


_NOTICE = _LoaderNotice()


def _quiet_loader_notice(tf: Any) -> None:
    tf_logger = tf.get_logger()
    if _NOTICE not in tf_logger.filters:
        tf_logger.addFilter(_NOTICE)
