"""Every query of the runtime, by name, one module per resource.

Functions take a SQLAlchemy `Session` as their first argument and keyword-only arguments after it;
they never commit: the caller (an API request, a sensor tick, a CLI command) owns the transaction.
"""
