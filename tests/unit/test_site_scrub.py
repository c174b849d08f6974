"""What `nmdc-site run --publish-log-tail` takes out of the log tail before publishing it."""

from __future__ import annotations

import pytest

from nmdc_site.run.scrub import REDACTED, scrub, scrub_lines, secret_values

# Looks like `secrets.token_urlsafe(32)`; fixed, so test ids are the same in every run (and every xdist worker).
TOKEN = "q7Vb2Xo9LmT4rW1sKc8Jd3Hf6Pz0Ny5Ga-E_uRtYiI"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (f"connecting with password={TOKEN}", TOKEN),
        ("DB_PASSWORD: 'hunter2 with spaces'", "hunter2 with spaces"),
        ('{"api_key": "abc123def"}', "abc123def"),
        ("aws --secret-access-key wJalrXUtnFEMIK7MDENG", "wJalrXUtnFEMIK7MDENG"),
        ("fetch --client-secret s3cr3t-value", "s3cr3t-value"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("curl -H 'authorization: basic dXNlcjpwYXNz'", "dXNlcjpwYXNz"),
        ("postgresql://nmdc:pa55word@db.internal:5432/nmdc", "pa55word"),
        ("grant eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl ok", "eyJhbGciOiJFZERTQSJ9"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("ghp_" + "a1B2" * 9, "ghp_"),
        (f"a generated one: {TOKEN}", TOKEN),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
    ],
)
def test_what_looks_like_a_secret_is_redacted(line, secret):
    scrubbed = scrub(line)
    assert secret not in scrubbed
    assert REDACTED in scrubbed


@pytest.mark.parametrize(
    "line",
    [
        "rows: 200, columns: 2",
        "the token was refreshed after 3 s",
        "sha256 " + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "/var/lib/nmdc-site/jobs/job-0123456789abcdef0123456789abcdef/inputs/sample.tsv",
        "wrote outputs/summary_statistics_by_sample.json",
    ],
)
def test_ordinary_lines_are_kept(line):
    assert scrub(line) == line


def test_the_values_of_secret_named_variables_are_redacted_wherever_they_appear():
    environ = {"NMDC_CLIENT_SECRET": "plain words secret", "MY_TOKEN": "short", "HOME": "/home/someone/x"}
    assert secret_values(environ) == ["plain words secret"]
    [line] = scrub_lines(["echo plain words secret from /home/someone/x"], environ)
    assert line == f"echo {REDACTED} from /home/someone/x"
