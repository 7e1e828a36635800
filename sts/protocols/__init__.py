"""One package per protocol (routes, codec, views); one protocol never imports another."""
