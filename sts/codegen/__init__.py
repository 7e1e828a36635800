"""Example requests and ready-to-run clients generated from a model's signature."""
