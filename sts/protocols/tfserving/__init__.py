"""TensorFlow Serving's REST API: predict/classify/regress, model status and metadata,
worded as TF Serving words them."""
