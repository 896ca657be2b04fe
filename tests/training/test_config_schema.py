"""TOML values against config field types."""

from __future__ import annotations

import pytest

from lapo.training.config_schema import type_ok


@pytest.mark.parametrize("value, hint, ok", [
    (3, int, True), (True, int, False), (3, float, True), ("3", int, False),
    (None, int | None, True), (2, int | None, True), ("x", int | None, False),
    (True, bool, True), (1, bool, False), ("colocate", str, True),
])
def test_type_checks(value, hint, ok) -> None:
    assert type_ok(value, hint) is ok
