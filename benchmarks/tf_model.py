"""Build the TensorFlow SavedModel that the loading-while-serving row loads, in its own
process (the bench itself never imports TensorFlow).

An MLP of 12 dense 1024x1024 layers (48 MB of float32 weights; random), input `x`
float32 [batch, 1024], output `y` float32 [batch, 10], with a `warmup.json` of two
requests, so that a load reads the variables, restores the graph and runs its first calls
(TensorFlow's slow first call of a function) as TF Serving's warm-up does.

Usage: python tf_model.py VERSION_FOLDER
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

WIDTH, LAYERS = 1024, 12


class Mlp(tf.Module):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        scale = 1 / np.sqrt(WIDTH)
        self.weights = [
            tf.Variable((rng.standard_normal((WIDTH, WIDTH)) * scale).astype(np.float32))
            for _ in range(LAYERS)
        ]
        self.out = tf.Variable((rng.standard_normal((WIDTH, 10)) * scale).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, WIDTH], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        for weight in self.weights:
            x = tf.nn.relu(tf.matmul(x, weight))
        return {"y": tf.nn.softmax(tf.matmul(x, self.out))}


def main() -> int:
    folder = Path(sys.argv[1])
    module = Mlp()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    rows = np.random.default_rng(1).random((8, WIDTH), dtype=np.float32).round(3).tolist()
    request = {"data": {"x": rows}}
    (folder / "warmup.json").write_text(json.dumps({"requests": [request, request]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
