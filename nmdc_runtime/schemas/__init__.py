"""Pydantic models of what the API takes and returns, one module per resource; re-exported here."""

from nmdc_runtime.schemas.common import Page, PageParams

__all__ = ["Page", "PageParams"]
