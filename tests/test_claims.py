"""The figures README.md and docs/learning.md give are the figures of a JSON under benchmarks/results/.

The convention (stated at the top of docs/learning.md): a paragraph, list or table whose figures come from
a benchmark carries an HTML comment ``<!-- from benchmarks/results/NAME.json -->``, at the end of its last
line or on the line right below it (no blank line between). Several files are separated by commas; a file
may be narrowed to one of its entries with ``#key`` (dotted for nested keys, list positions as numbers:
``benchmarks/results/quickstart.json#idle``). In the block (its non-blank lines around the comment), every
checked figure must equal one of the numbers of those JSONs (or a decimal inside one of their strings: a
run's printed lines, recorded as they came) rounded to the decimals written, sign ignored:

- a number with a decimal point followed by ``%`` (``81.01 %``, ``**77.73 %**``, ``68.0 %``);
- a number with a decimal point followed by ``points`` / ``point`` / ``pp`` (``3.6 points``);
- a number with a decimal point and an explicit sign (``+8.12``, ``-1.35``).

Integers (counts, settings such as ``25 %``), unsigned decimals without a unit (``0.54`` steps/s, ``2.92``)
and anything in backticks (commands, overrides) are not checked. A comment whose block holds no checked
figure, a missing file or key, or a figure not found fails the test; so does a document set with no comment
at all (the test would check nothing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", "docs/learning.md"]
RESULTS = "benchmarks/results/"

MARK = re.compile(r"<!--\s*from\s+(?P<sources>.+?)\s*-->")
CODE = re.compile(r"`[^`]*`")
# sign, digits.digits, then an optional unit; not part of a longer number or word (1-3.6 is a range, not -3.6)
FIGURE = re.compile(r"(?<![\w.])(?P<sign>[+\-\u2212]?)(?P<value>\d+\.\d+)(?![\w.])"
                    r"(?P<unit>\s*(?:%|points?\b|pp\b))?")


@dataclass(frozen=True)
class Claim:
    where: str  # file:line of the comment
    sources: tuple[str, ...]
    figures: tuple[str, ...]  # as written, without sign


def checked_figures(text: str) -> list[str]:
    """The figures of ``text`` the convention checks (outside backticks)."""
    text = MARK.sub(" ", CODE.sub(" ", text))
    return [m["value"] for m in FIGURE.finditer(text) if m["sign"] or m["unit"]]


def claims(text: str, where: str) -> list[Claim]:
    """Every marked block of a markdown text."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        for mark in MARK.finditer(CODE.sub(" ", line)):  # a comment shown in backticks is not a marker
            start, end = i, i
            while start > 0 and lines[start - 1].strip():
                start -= 1
            while end + 1 < len(lines) and lines[end + 1].strip():
                end += 1
            sources = tuple(s.strip() for s in mark["sources"].split(",") if s.strip())
            block = "\n".join(lines[start:end + 1])
            out.append(Claim(f"{where}:{i + 1}", sources, tuple(checked_figures(block))))
    return out


def json_numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in json_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in json_numbers(v)]
    if isinstance(value, str):  # a run's printed lines, recorded as they came, are evidence of what they print
        return [float(m) for m in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", value)]
    return []


def load_source(source: str, root: Path = ROOT):
    """The JSON value a source names: ``path`` or ``path#key.key``."""
    path, _, key = source.partition("#")
    assert path.startswith(RESULTS) and path.endswith(".json"), f"{source}: not a JSON under {RESULTS}"
    file = root / path
    assert file.is_file(), f"{source}: {path} does not exist"
    value = json.loads(file.read_text())
    for part in key.split(".") if key else []:
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise AssertionError(f"{source}: no key {part!r} in {path}")
    return value


def missing(claim: Claim, root: Path = ROOT) -> list[str]:
    """The figures of a claim not among its sources' numbers (rounded to the decimals written)."""
    numbers = [abs(x) for s in claim.sources for x in json_numbers(load_source(s, root))]
    out = []
    for figure in claim.figures:
        decimals = len(figure.split(".")[1])
        if not any(f"{x:.{decimals}f}" == figure for x in numbers):
            out.append(figure)
    return out


def all_claims() -> list[Claim]:
    return [c for doc in DOCUMENTS for c in claims((ROOT / doc).read_text(), doc)]


@pytest.mark.parametrize("claim", all_claims(), ids=lambda c: c.where)
def test_every_marked_figure_is_in_its_json(claim):
    assert claim.figures, f"{claim.where}: the marked block has no figure the convention checks"
    assert not missing(claim), (f"{claim.where}: {', '.join(missing(claim))} not found in "
                                f"{', '.join(claim.sources)} (rounded to the decimals written)")


def test_the_documents_mark_their_figures():
    """The test checks something: the documents carry markers (the learning benchmark's tables at least)."""
    marked = all_claims()
    assert any(c.where.startswith("docs/learning.md") for c in marked)
    assert sum(len(c.figures) for c in marked) >= 10


def test_the_convention_finds_a_wrong_figure(tmp_path):
    """The checker itself: rounding, signs, units, backticks, blocks, keys; and a wrong figure is reported."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "r.json").write_text(json.dumps({"idle": {"teacher": 81.0149, "gap": -4.679, "steps_per_s": 1.7},
                                                "busy": {"teacher": 79.5}}))
    doc = ("Intro with 12.34 % outside any block.\n\n"
           "| run | teacher | gap | steps/s |\n| --- | ---: | ---: | ---: |\n"
           "| idle | **81.01 %** | -4.68 | 0.57 |\n"
           "<!-- from benchmarks/results/r.json#idle -->\n\n"
           "The teacher reached 81.0 %, 4.7 points below pixels, with `lr=0.002 warmup 25.5 %` and 1-3.5 H"
           " over 25 % of the run. <!-- from benchmarks/results/r.json -->\n\n"
           "Busy: 79.50 % and 81.01 %.\n<!-- from benchmarks/results/r.json#busy -->\n\n"
           "Nothing to check: 0.57 steps/s.\n<!-- from benchmarks/results/r.json -->\n\n"
           "Shown in code: `<!-- from benchmarks/results/none.json -->`\n")
    found = claims(doc, "doc")
    assert [c.where for c in found] == ["doc:6", "doc:8", "doc:11", "doc:14"]
    assert [c.figures for c in found] == [("81.01", "4.68"), ("81.0", "4.7"), ("79.50", "81.01"), ()]
    assert [missing(c, tmp_path) for c in found[:3]] == [[], [], ["81.01"]]  # 81.01 is the idle run's, not busy's
    with pytest.raises(AssertionError, match="no key 'slow'"):
        load_source("benchmarks/results/r.json#slow", tmp_path)
    with pytest.raises(AssertionError, match="does not exist"):
        load_source("benchmarks/results/gone.json", tmp_path)
