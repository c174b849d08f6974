"""Shapes shared by every resource: pages of lists, and the limits on common strings."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, ClassVar, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, Strict, StringConstraints

T = TypeVar("T")

MAX_JSON_DEPTH = 32
"""How deep a JSON request body may nest (the body itself is level 1): far more than any real client needs,
far less than what exhausts a parser's or a serializer's recursion."""
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 20

# Ids chosen by people (sites, workflows, users): short, printable, no spaces, slashes or colons (a colon
# starts a custom method in a path: `/sites/{id}:generateCredentials`). The CLI checks the same patterns.
CHOSEN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
ChosenId = Annotated[str, StringConstraints(pattern=CHOSEN_ID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=True)]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
"""A capability or data type."""
Text = Annotated[str, StringConstraints(max_length=4096)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda value: value.astimezone(UTC))]
"""A time with its offset, kept in UTC: answers say `Z` whichever offset the caller wrote."""
# Request flags and counts take JSON booleans and integers only: "yes" is not an admin flag, true is not 1.
StrictBool = Annotated[bool, Strict()]
StrictInt = Annotated[int, Strict()]


class Page(BaseModel, Generic[T]):
    """One page of a list. `next_page_token` is null on the last page, and only there."""

    resources: list[T]
    next_page_token: str | None = None


class ReadModel(BaseModel):
    """Base of response models read from ORM rows."""

    model_config = ConfigDict(from_attributes=True)

    list_columns: ClassVar[tuple[str, ...]] = ()
    """What `nmdc-runtime ... list` prints of each, in this order (see `column_header`); `--json` prints the
    whole model, as the API shows it."""


def column_header(column: str) -> str:
    """A list column's header: its field name, dotted into a nested model (`error.code`: `error_code`), without
    the `metadata.` of an operation's fields."""
    return column.removeprefix("metadata.").replace(".", "_")


def column_value(document: dict, column: str) -> object:
    """The value of a (dotted) list column in a model's JSON form; None where a part is missing or null."""
    value: object = document
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class StrictModel(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


JsonObject = Annotated[dict, Field(description="A JSON object.")]
