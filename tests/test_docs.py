"""The README's configuration table is the variables table, so documentation cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from litestar_omnii_obs._internal.env import VARIABLES

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_lists_every_variable_with_its_field() -> None:
    section = README.split("<!-- variables:start -->", 1)[1].split("<!-- variables:end -->", 1)[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \| `([a-z_.]+)` \|", section, flags=re.MULTILINE)
    assert documented == [(var.name, var.field) for var in VARIABLES]
