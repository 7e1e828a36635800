"""What cuts across the protocols over HTTP: error handlers, body reading and limits,
typed dependencies, OpenAPI schemas, `/metrics`, the code generation routes."""
