"""Taking what looks like a secret out of text the agent publishes (the command's log tail, with
`--publish-log-tail`): execution details are readable by every token, so a leaked secret would be everyone's.

It is a net, not a guarantee: it replaces the values of this process's own secret-named environment variables
wherever they appear, and whatever has the shape of a secret — `password=…`-like assignments, bearer and basic
credentials, passwords in URLs, JWTs, private key blocks, well-known token formats, and long random-looking
strings that mix upper and lower case letters and digits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"

_SECRET_NAME = r"[\w.-]*(?:secret|passw(?:or)?d|pwd|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth)[\w.-]*"
SECRET_NAME = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)
"""Environment variable (or field) names whose values are taken as secrets."""

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys, also when the log tail cut the block short.
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
        REDACTED,
    ),
    # `Authorization: Bearer …`, `Basic …`.
    (re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), rf"\1 {REDACTED}"),
    # `password=…`, `"api_key": "…"`, `TOKEN: …`.
    (
        re.compile(rf"""(\b{_SECRET_NAME}["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&"']+)""", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # `--client-secret …`, `-password …`.
    (re.compile(rf"""(\s-{{1,2}}{_SECRET_NAME}\s+)("[^"]*"|'[^']*'|\S+)""", re.IGNORECASE), rf"\1{REDACTED}"),
    # A password in a URL: scheme://user:password@host.
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@", re.IGNORECASE), rf"\1:{REDACTED}@"),
    # JWTs (access tokens, grants).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Well-known token formats: AWS access key ids, GitHub, Slack, Google API keys.
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), REDACTED),
]

_RANDOM_LOOKING = re.compile(r"[A-Za-z0-9+_-]{24,}={0,2}")


def _random_looking(match: re.Match[str]) -> str:
    word = match.group(0)
    # Upper, lower and digits together: generated secrets have them; words, paths and hex digests do not.
    mixed = (
        any(c.isupper() for c in word) and any(c.islower() for c in word) and any(c.isdigit() for c in word)
    )
    return REDACTED if mixed else word


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret-named environment variables (8 characters or more), longest first."""
    env = os.environ if environ is None else environ
    values = {value for name, value in env.items() if SECRET_NAME.match(name) and len(value) >= 8}
    return sorted(values, key=len, reverse=True)


def scrub(line: str, secrets: Iterable[str] = ()) -> str:
    """`line` with each of `secrets` and whatever looks like a secret replaced by `[redacted]`."""
    for value in secrets:
        line = line.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        line = pattern.sub(replacement, line)
    return _RANDOM_LOOKING.sub(_random_looking, line)


def scrub_lines(lines: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Each line scrubbed (see `scrub`), the process's secret-named environment values included."""
    values = secret_values(environ)
    return [scrub(line, values) for line in lines]
