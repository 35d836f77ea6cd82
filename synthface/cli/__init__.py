"""synthface's command line: one module per command group, each command a thin call into the
importable API (parsing options, calling one function, printing). `app.main` is the root group;
`options` holds the shared option types, `errors` the error handling every command shares."""

from .app import main

__all__ = ["main"]
