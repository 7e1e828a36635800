"""Tiny TensorFlow SavedModels built in tests: TF 2 modules, TF 1 graphs, a Keras export."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf

from sts.signature import DTYPES

NUMERIC = tuple(name for name in DTYPES if name not in ("bool", "string"))


class _Everything(tf.Module):
    """One signature per concern; the default one takes every dtype sts supports."""

    @tf.function(
        input_signature=[
            *(tf.TensorSpec([None], getattr(tf, n), name=n) for n in NUMERIC),
            tf.TensorSpec([None], tf.bool, name="bool"),
            tf.TensorSpec([None], tf.string, name="string"),
        ]
    )
    def every_dtype(self, *args: Any) -> dict[str, Any]:
        *numbers, flags, text = args
        out = {n: x + tf.ones_like(x) for n, x in zip(NUMERIC, numbers, strict=True)}
        out["bool"] = tf.logical_not(flags)
        out["string"] = tf.strings.upper(text)
        return out

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 3], tf.float32, name="x"),
            tf.TensorSpec([], tf.float32, name="factor"),
        ]
    )
    def scale(self, x: Any, factor: Any) -> dict[str, Any]:
        return {"scaled": x * factor, "total": tf.reduce_sum(x * factor, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
    def raw_bytes(self, n: Any) -> dict[str, Any]:
        return {"raw": tf.fill(tf.shape(n), tf.constant(b"\xff\xfe\x00")), "n": n}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def checked_sqrt(self, x: Any) -> dict[str, Any]:
        with tf.control_dependencies([tf.debugging.assert_non_negative(x, message="x < 0")]):
            return {"root": tf.sqrt(x)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None, 2], tf.float32, name="b"),
        ]
    )
    def add_pairs(self, a: Any, b: Any) -> dict[str, Any]:
        return {"sum": a + b}


def everything(path: Path) -> Path:
    """TF 2 `tf.saved_model.save` with five signatures (default: `serving_default`)."""
    module = _Everything()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.every_dtype,
            "scale": module.scale,
            "raw_bytes": module.raw_bytes,
            "checked_sqrt": module.checked_sqrt,
            "add_pairs": module.add_pairs,
        },
    )
    return path


def half_plus_two(path: Path) -> Path:
    """TF 1 `SavedModelBuilder`, like TF Serving's test model: y = x/2 + 2, with predict,
    classify and regress signatures; the latter two parse serialized `tf.Example`s."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        from_examples = tf.add(tf.multiply(a, parsed["x"]), b, name="y_from_examples")
        classes = tf.fill(tf.shape(from_examples), "half_plus_two")
        sig = v1.saved_model.signature_def_utils
        signatures = {
            "serving_default": sig.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": sig.classification_signature_def(serialized, classes, from_examples),
            "regress_x_to_y": sig.regression_signature_def(serialized, from_examples),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map=signatures, strip_default_attrs=True
            )
            builder.save()
    return path


def half_plus_two_from_examples(path: Path) -> Path:
    """TF Serving's own half_plus_two (its README's quick start), TF 1 style: the predict
    signature's input `x` (float [-1, 1]) is the output of a `ParseExample` fed from a
    serialized `tf.Example` placeholder, which the classify and regress signatures take.
    Like TF Serving's, it ships an asset file its init op refers to."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        asset = Path(tempfile.mkdtemp()) / "foo.txt"
        asset.write_text("asset-file-contents")
        asset_path = tf.constant(str(asset), name="asset_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        filename = v1.Variable("", name="filename", trainable=False, collections=[])
        sig = v1.saved_model.signature_def_utils
        signatures = {
            "serving_default": sig.predict_signature_def({"x": x}, {"y": y}),
            "classify_x_to_y": sig.classification_signature_def(
                serialized, tf.fill(tf.shape(y), "half_plus_two"), y
            ),
            "regress_x_to_y": sig.regression_signature_def(serialized, y),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=tf.group(filename.assign(asset_path)),
                strip_default_attrs=True,
            )
            builder.save()
    shutil.rmtree(asset.parent)  # the SavedModel has its own copy under assets/
    return path


def vocabulary_lookup(path: Path) -> Path:
    """TF 1 style: word ids from a lookup table initialised from an asset vocabulary file
    (`cat`, `dog`, `bird`; -1 for others). `words` (string [-1]) feeds the table directly;
    `examples` (serialized `tf.Example`s with a `word` feature) go through a ParseExample."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        vocabulary = Path(tempfile.mkdtemp()) / "vocabulary.txt"
        vocabulary.write_text("cat\ndog\nbird\n")
        vocabulary_path = tf.constant(str(vocabulary), name="vocabulary_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, vocabulary_path)
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocabulary_path,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            ),
            -1,
        )
        words = v1.placeholder(tf.string, [None], name="words")
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {"word": v1.io.FixedLenFeature([1], tf.string)})
        sig = v1.saved_model.signature_def_utils
        signatures = {
            "serving_default": sig.predict_signature_def(
                {"words": words}, {"ids": table.lookup(words)}
            ),
            "from_examples": sig.predict_signature_def(
                {"examples": serialized}, {"ids": table.lookup(parsed["word"])}
            ),
        }
        with v1.Session(graph=graph) as session:
            session.run(v1.tables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=v1.tables_initializer(),
                strip_default_attrs=True,
            )
            builder.save()
    shutil.rmtree(vocabulary.parent)  # the SavedModel has its own copy under assets/
    return path


def example(x: float) -> bytes:
    """A serialized `tf.Example` with one float feature `x`."""
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
    return tf.train.Example(features=tf.train.Features(feature={"x": feature})).SerializeToString()


def word_example(word: str) -> bytes:
    """A serialized `tf.Example` with one bytes feature `word`."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[word.encode()]))
    return tf.train.Example(
        features=tf.train.Features(feature={"word": feature})
    ).SerializeToString()


def keras_export(path: Path) -> Path:
    """A Keras 3 model written by `model.export` (no tf-keras)."""
    import keras

    model = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(2)])
    model.layers[0].set_weights([tf.ones([4, 2]).numpy(), tf.constant([0.0, 1.0]).numpy()])
    model.export(str(path), verbose=False)
    return path


def encoded_images(path: Path) -> Path:
    """A model that takes encoded PNGs (string input `image`) and decodes them itself."""

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
        def decode(self, image: Any) -> dict[str, Any]:
            height = tf.map_fn(
                lambda one: tf.shape(tf.io.decode_png(one))[0], image, fn_output_signature=tf.int32
            )
            return {"bytes": tf.strings.length(image), "height": height}

    module = Decoder()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.decode})
    return path
