"""Applying unified diffs for pull requests, including diffs whose secrets were redacted in storage."""

from __future__ import annotations

import pytest

from services.common.errors import CooError, ErrorType
from services.common.scrub import scrub_text
from services.worker.agents.diffs import apply_patch, parse_diff

ORIGINAL = 'REGION = "eu-west-1"\nKEY = "AKIAQ7EXAMPLEFAKE123"\nHOST = "db"\npassword = "hunter2"\n'
DIFF = """\
--- a/config.py
+++ b/config.py
@@ -1,4 +1,4 @@
 REGION = "eu-west-1"
-KEY = "AKIAQ7EXAMPLEFAKE123"
+KEY = "<set from environment: AWS_ACCESS_KEY_ID>"
 HOST = "db"
-password = "hunter2"
+password = ""
"""
PATCHED = 'REGION = "eu-west-1"\nKEY = "<set from environment: AWS_ACCESS_KEY_ID>"\nHOST = "db"\npassword = ""\n'


def test_a_diff_applies_as_written() -> None:
    (change,) = parse_diff(DIFF)
    assert apply_patch("config.py", ORIGINAL, change.patch) == PATCHED


def test_a_diff_whose_removed_secrets_were_redacted_applies_to_the_real_file() -> None:
    stored = scrub_text(DIFF)
    assert "AKIA" not in stored and "hunter2" not in stored
    (change,) = parse_diff(stored)
    assert apply_patch("config.py", ORIGINAL, change.patch) == PATCHED


def test_a_redacted_context_line_keeps_the_files_own_text() -> None:
    diff = '--- a/c.py\n+++ b/c.py\n@@ -1,2 +1,2 @@\n KEY = "[REDACTED]"\n-HOST = "db"\n+HOST = "db2"\n'
    (change,) = parse_diff(diff)
    assert (
        apply_patch("c.py", 'KEY = "real-value"\nHOST = "db"\n', change.patch) == 'KEY = "real-value"\nHOST = "db2"\n'
    )


@pytest.mark.parametrize(
    ("diff", "says"),
    [
        (DIFF.replace('+password = ""', '+password = "[REDACTED]"'), "adds a line whose secret was redacted"),
        (DIFF.replace('-password = "hunter2"', '-password = "other"'), "config.py hunk 1 (@@ -1,4 +1,4 @@)"),
        (DIFF.replace(' HOST = "db"', ' HOST = "[REDACTED]x"'), "does not match"),
    ],
)
def test_a_diff_that_does_not_apply_names_the_file_and_hunk(diff: str, says: str) -> None:
    (change,) = parse_diff(diff)
    with pytest.raises(CooError) as refused:
        apply_patch("config.py", ORIGINAL, change.patch)
    assert refused.value.error_type is ErrorType.VALIDATION and says in refused.value.message
