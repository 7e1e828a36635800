"""HTTP layer: one router per protocol or concern, built by `create_app`."""
