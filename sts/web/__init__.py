"""Dashboard pages, rendered from `templates/` with autoescape on."""
