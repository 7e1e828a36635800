"""The original Simple TensorFlow Serving API: `POST /` (JSON, multipart and raw images),
`/v1/models`, `/health`."""
