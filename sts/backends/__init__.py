"""Framework adapters. Each one turns a model folder into `predict(dict[str, ndarray])`."""
