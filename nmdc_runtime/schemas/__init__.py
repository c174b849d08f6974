"""Pydantic models of what the API takes and returns, one module per resource; re-exported here."""

from nmdc_runtime.schemas.accounts import (
    PrincipalRead,
    SiteCreate,
    SiteCredentials,
    SiteRead,
    UserCreate,
    UserRead,
)
from nmdc_runtime.schemas.common import Page
from nmdc_runtime.schemas.data import (
    Checksum,
    DataResourceCreate,
    DataResourceRead,
    JobCreate,
    JobRead,
    WorkflowCreate,
    WorkflowRead,
    WorkflowUpdate,
)

__all__ = [
    "Checksum",
    "DataResourceCreate",
    "DataResourceRead",
    "JobCreate",
    "JobRead",
    "Page",
    "PrincipalRead",
    "SiteCreate",
    "SiteCredentials",
    "SiteRead",
    "UserCreate",
    "UserRead",
    "WorkflowCreate",
    "WorkflowRead",
    "WorkflowUpdate",
]
