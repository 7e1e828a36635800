"""Tests of the framework adapters (`sts/backends/`), each on tiny real models."""
