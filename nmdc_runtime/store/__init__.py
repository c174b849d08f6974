"""Every query of the runtime, by name, one module per resource.

Functions take a SQLAlchemy `Session` as their first argument and keyword-only arguments after it;
they never commit: the caller (a service of `nmdc_runtime.services`) owns the transaction. Reads may be
called from anywhere.
"""
