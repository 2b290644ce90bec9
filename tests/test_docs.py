"""The README says what is true: its tables, names, examples and collector config are checked against the code.

The configuration table is generated from the variables table (``.venv/bin/python -m tests.test_docs``
rewrites it in README.md), the public API section names every export, the testing example is the one
``tests/test_testing.py`` runs, and the OpenTelemetry Collector ``filelog`` config is checked against
lines the metric writer really emits (there is no collector binary here: the config's timestamp layout,
field names and integer handling are checked one by one).
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient

import litestar_omnii_obs
import litestar_omnii_obs.testing
from litestar_omnii_obs import GraphQueryMetric, MetricsConfig, ObservabilityConfig, ObservabilityPlugin, log_metric
from litestar_omnii_obs._internal.env import VARIABLES, display_value

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
#: The reference page: the same table with what each variable accepts.
CONFIGURATION_PATH = ROOT / "docs" / "configuration.md"
TABLE_START, TABLE_END = "<!-- variables:start -->", "<!-- variables:end -->"


def section(title: str, text: str = README) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def fenced_blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


# --------------------------------------------------------------------------- the configuration table


def variables_table(*, allowed: bool) -> str:
    """Every variable, its field and its default; with ``allowed``, what it accepts (the reference page)."""
    defaults = ObservabilityConfig()
    rows = ["| variable | field | default |", "| --- | --- | --- |"]
    if allowed:
        rows = [rows[0] + " allowed |", rows[1] + " --- |"]
    for var in VARIABLES:
        value: Any = defaults
        for part in var.field.split("."):
            value = getattr(value, part)
        row = f"| `{var.name}` | `{var.field}` | `{display_value(var.field, value)}` |"
        if allowed:
            row += f" {var.allowed}{f' (secret: {var.secret})' if var.secret else ''} |"
        rows.append(row)
    return "\n".join(rows)


def table_in(text: str) -> str:
    return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


def test_readme_lists_every_variable_with_its_field() -> None:
    documented = re.findall(r"^\| `([A-Z_]+)` \| `([a-z_.]+)` \|", table_in(README), flags=re.MULTILINE)
    assert documented == [(var.name, var.field) for var in VARIABLES]


@pytest.mark.parametrize(("path", "allowed"), [(README_PATH, False), (CONFIGURATION_PATH, True)])
def test_the_configuration_tables_are_generated_from_the_variables_table(path: Path, allowed: bool) -> None:
    assert table_in(path.read_text()) == variables_table(allowed=allowed), (
        "regenerate: .venv/bin/python -m tests.test_docs"
    )
    assert TABLE_START in section("Configuration")


# --------------------------------------------------------------------------- structure and names


def test_a_user_reads_how_to_install_first_then_the_two_set_up_commands() -> None:
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    assert headings[:3] == ["Install", "Working on the package", "Quick start"]
    install = section("Install")
    for way in ("pip install /path/to/", "git+https://", ".whl"):
        assert way in install
    extras = set(re.findall(r"litestar-omnii-obs\[(\w+)\]", install))
    with (ROOT / "pyproject.toml").open("rb") as pyproject:
        assert extras == set(tomllib.load(pyproject)["project"]["optional-dependencies"])
    commands = fenced_blocks("bash", section("Working on the package"))[0].splitlines()
    assert [line.split("#")[0].strip() for line in commands] == ["make run", "make test"]


def test_the_readme_is_under_25_kb() -> None:
    assert len(README.encode()) < 25_000


def test_the_public_api_section_names_every_export() -> None:
    api = section("Public API")
    named = set(re.findall(r"`([A-Za-z_.]+)`", api))
    missing = [name for name in litestar_omnii_obs.__all__ if name not in named]
    assert missing == []
    assert set(litestar_omnii_obs.testing.__all__) <= named
    for command in ("litestar obs config", "litestar obs check", "litestar obs test-error"):
        assert f"`{command}`" in api


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize(
    "document", ["README.md", "docs/internals.md", "docs/design-history.md", "docs/configuration.md"]
)
def test_links_to_local_files_and_their_sections_resolve(document: str) -> None:
    path = ROOT / document
    text = path.read_text()
    for target in re.findall(r"\]\(([^)#:]*)(?:#[^)]*)?\)", text):
        if target and not target.startswith("bench/results/"):  # written by `make bench`
            assert (path.parent / target).exists(), target
    for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]+)\)", text):
        linked = (path.parent / target) if target else path
        anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)}
        assert anchor in anchors, f"{target}#{anchor}"


def test_the_testing_example_is_the_one_the_test_suite_runs() -> None:
    (example,) = [block for block in fenced_blocks("python") if "obs_capture: ObservabilityCapture" in block]
    body = example[example.index("@pytest.fixture") :]
    assert body in (ROOT / "tests" / "test_testing.py").read_text()


# --------------------------------------------------------------------------- the collector's filelog config

#: Go reference-time layout elements this README uses: (element, regular expression, strptime directive).
GO_LAYOUT = [
    ("Z07:00", r"(?:Z|[+-]\d{2}:\d{2})", "%z"),
    (".000000", r"\.\d{6}", ".%f"),
    ("2006", r"\d{4}", "%Y"),
    ("01", r"\d{2}", "%m"),
    ("02", r"\d{2}", "%d"),
    ("15", r"\d{2}", "%H"),
    ("04", r"\d{2}", "%M"),
    ("05", r"\d{2}", "%S"),
]


def go_layout(layout: str) -> tuple[str, str]:
    """A Go time layout as (a regular expression, a strptime format); an element not listed fails the test."""
    pattern, directives, rest = "", "", layout
    while rest:
        for element, regex, directive in GO_LAYOUT:
            if rest.startswith(element):
                pattern, directives, rest = pattern + regex, directives + directive, rest[len(element) :]
                break
        else:
            assert not rest[0].isdigit(), f"unknown Go layout element at {rest!r}"
            pattern, directives, rest = pattern + re.escape(rest[0]), directives + rest[0], rest[1:]
    return pattern, directives


@get("/users/{user_id:int}")
async def get_user(user_id: FromPath[int]) -> dict[str, int]:
    log_metric(GraphQueryMetric(query_type="cypher", duration=2.0, result_count=3))  # a whole-number duration
    return {"id": user_id}


@pytest.fixture
def written_lines(tmp_path: Path) -> list[str]:
    """Lines the writer emitted for one request, read from a file sink as the collector would."""
    sink = tmp_path / "metrics.jsonl"
    config = ObservabilityConfig(metrics=MetricsConfig(sink=str(sink)))
    with TestClient(Litestar([get_user], plugins=[ObservabilityPlugin(config)])) as client:
        assert client.get("/users/42").status_code == 200
    lines = sink.read_text().splitlines()
    assert [json.loads(line)["metric"] for line in lines] == ["graph_query_duration", "api_latency"]
    return lines


def filelog_config() -> dict[str, Any]:
    (block,) = [block for block in fenced_blocks("yaml", section("Deploying")) if "filelog" in block]
    config: dict[str, Any] = yaml.safe_load(block)
    (receiver,) = [value for name, value in config["receivers"].items() if name.split("/")[0] == "filelog"]
    return dict(receiver)


def operator(receiver: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = [op for op in receiver["operators"] if op["type"] == kind]
    return dict(found)


def attribute(field: str) -> str:
    """``attributes.x`` -> ``x``: the json_parser puts each key of the line into the attributes."""
    assert field.startswith("attributes."), field
    return field.removeprefix("attributes.")


def test_the_filelog_config_reads_the_file_the_readme_names() -> None:
    (sink,) = re.findall(r"`OMNII_OBS_METRICS_SINK=(/[^`]+)`", section("Deploying"))  # a file path
    assert any(fnmatch.fnmatch(sink, pattern) for pattern in filelog_config()["include"])


def test_the_filelog_timestamp_layout_parses_the_lines_timestamps(written_lines: list[str]) -> None:
    parser = operator(filelog_config(), "json_parser")
    assert parser.get("parse_to", "attributes") == "attributes"
    timestamp = parser["timestamp"]
    assert timestamp["layout_type"] == "gotime"
    pattern, directives = go_layout(timestamp["layout"])
    for line in written_lines:
        value = json.loads(line)[attribute(timestamp["parse_from"])]
        assert re.fullmatch(pattern, value), (value, timestamp["layout"])
        assert datetime.strptime(value, directives).tzinfo == UTC


def test_the_trace_parser_finds_hex_ids_of_the_lengths_it_needs(written_lines: list[str]) -> None:
    trace_parser = operator(filelog_config(), "trace_parser")
    for line in written_lines:
        parsed = json.loads(line)
        assert re.fullmatch("[0-9a-f]{32}", parsed[attribute(trace_parser["trace_id"]["parse_from"])])
        assert re.fullmatch("[0-9a-f]{16}", parsed[attribute(trace_parser["span_id"]["parse_from"])])
        assert isinstance(parsed["sampled"], bool)
    # Both records of the request are in its trace.
    assert len({json.loads(line)["trace_id"] for line in written_lines}) == 1


def test_with_parse_ints_counts_stay_integers_and_durations_stay_floats(written_lines: list[str]) -> None:
    assert operator(filelog_config(), "json_parser")["parse_ints"] is True
    query, latency = (json.loads(line) for line in written_lines)
    # Python's json, like the collector with parse_ints, reads 3 as an integer and 2.0 as a float.
    assert (type(query["result_count"]), type(latency["status"])) == (int, int)
    assert (type(query["duration"]), type(latency["duration"])) == (float, float)
    assert query["duration"] == 2.0


def write_variables_tables() -> None:
    """Rewrite the configuration tables (README and reference page) from the variables table."""
    for path, allowed in ((README_PATH, False), (CONFIGURATION_PATH, True)):
        head, rest = path.read_text().split(TABLE_START, 1)
        tail = rest.split(TABLE_END, 1)[1]
        path.write_text(f"{head}{TABLE_START}\n{variables_table(allowed=allowed)}\n{TABLE_END}{tail}")
        sys.stdout.write(f"{path.relative_to(ROOT)}: configuration table rewritten from the variables table\n")


if __name__ == "__main__":
    write_variables_tables()
