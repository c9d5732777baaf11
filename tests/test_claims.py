"""The figures README.md and docs/learning.md give are the figures at declared keys of a JSON under benchmarks/results/.

The convention (stated at the top of docs/learning.md): a paragraph, list or table whose figures come from
a benchmark carries an HTML comment ``<!-- from benchmarks/results/NAME.json#PREFIX: KEY, KEY -->``, at the end of
its last line or on the line right below it (no blank line between). Several sources are separated by ``;``.
``PREFIX`` (optional) narrows the file to one entry; each ``KEY`` is a dotted path below it (list positions as
numbers, ``*`` for every entry of a list or object) that names a number, or a string holding a run's printed
line (its decimals count: the line as it came); ``-KEY`` says the document writes that number negated
("5.24 points ahead" of a gap of -5.24). In the block (its non-blank lines around the comment), every checked
figure must equal one of the numbers at those keys rounded to the decimals written, sign included (a figure
written without a sign is a positive number):

- a number with a decimal point followed by ``%`` (``81.01 %``, ``**77.73 %**``, ``68.0 %``);
- a number with a decimal point followed by ``points`` / ``point`` / ``pp`` (``3.6 points``);
- a number with a decimal point and an explicit sign (``+8.12``, ``-1.35``).

Integers (counts, settings such as ``25 %``), unsigned decimals without a unit (``0.54`` steps/s, ``2.92``)
and anything in backticks (commands, overrides) are not checked. A comment whose block holds no checked
figure, a source without declared keys, a missing file or key, a key naming no number, or a figure not found
fails the test; so does a document set with no comment at all (the test would check nothing).
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
LINE_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")


@dataclass(frozen=True)
class Claim:
    where: str  # file:line of the comment
    sources: tuple[str, ...]  # "path#prefix: key, -key"
    figures: tuple[str, ...]  # as written, sign included ("-5.24", "80.45")


def checked_figures(text: str) -> list[str]:
    """The figures of ``text`` the convention checks (outside backticks), each with its sign ("-" or none)."""
    text = MARK.sub(" ", CODE.sub(" ", text))
    return [("-" if m["sign"] in "-\u2212" and m["sign"] else "") + m["value"]
            for m in FIGURE.finditer(text) if m["sign"] or m["unit"]]


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
            sources = tuple(s.strip() for s in mark["sources"].split(";") if s.strip())
            block = "\n".join(lines[start:end + 1])
            out.append(Claim(f"{where}:{i + 1}", sources, tuple(checked_figures(block))))
    return out


def at_path(value, parts: list[str], source: str) -> list:
    """The values at a dotted path (``*``: every entry); a missing key fails, naming the source."""
    if not parts:
        return [value]
    part, rest = parts[0], parts[1:]
    if part == "*" and isinstance(value, (list, dict)):
        return [x for v in (value.values() if isinstance(value, dict) else value) for x in at_path(v, rest, source)]
    if isinstance(value, list) and part.isdigit() and int(part) < len(value):
        return at_path(value[int(part)], rest, source)
    if isinstance(value, dict) and part in value:
        return at_path(value[part], rest, source)
    raise AssertionError(f"{source}: no key {part!r}")


def load_source(source: str, root: Path = ROOT) -> list[float]:
    """The numbers a source declares: ``path#prefix: key, -key`` (a negated key's numbers are negated)."""
    head, colon, keys = source.partition(":")
    path, _, prefix = head.strip().partition("#")
    assert path.startswith(RESULTS) and path.endswith(".json"), f"{source}: not a JSON under {RESULTS}"
    assert colon and keys.strip(), f"{source}: declare the keys its figures are read from (path#prefix: key, key)"
    file = root / path
    assert file.is_file(), f"{source}: {path} does not exist"
    base = at_path(json.loads(file.read_text()), prefix.split(".") if prefix else [], source)
    numbers: list[float] = []
    for key in (k.strip() for k in keys.split(",") if k.strip()):
        sign = -1.0 if key.startswith("-") else 1.0
        for entry in base:
            for value in at_path(entry, key.lstrip("-").split("."), source):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    numbers.append(sign * value)
                elif isinstance(value, str):  # a run's printed line, recorded as it came
                    numbers.extend(sign * float(m) for m in LINE_DECIMAL.findall(value))
                else:
                    raise AssertionError(f"{source}: {key!r} names no number (a {type(value).__name__})")
    return numbers


def missing(claim: Claim, root: Path = ROOT) -> list[str]:
    """The figures of a claim not among its declared numbers (rounded to the decimals written, sign included)."""
    numbers = [x for s in claim.sources for x in load_source(s, root)]
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
    """The checker itself: rounding, signs, units, backticks, blocks, declared keys; a wrong figure, a figure
    of the wrong sign, and a figure that is only at an undeclared key are each reported."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "r.json").write_text(json.dumps({
        "idle": {"teacher": 81.0149, "gap": -4.679, "steps_per_s": 1.7, "line": "teacher 81.01 %, pixels 85.69 %"},
        "busy": {"teacher": 79.5, "random": 81.01}, "runs": [{"top1": 70.04}, {"top1": 71.25}]}))
    doc = ("Intro with 12.34 % outside any block.\n\n"
           "| run | teacher | gap | steps/s |\n| --- | ---: | ---: | ---: |\n"
           "| idle | **81.01 %** | -4.68 | 0.57 |\n"
           "<!-- from benchmarks/results/r.json#idle: teacher, gap -->\n\n"
           "The teacher reached 81.0 %, 4.7 points below pixels, with `lr=0.002 warmup 25.5 %` and 1-3.5 H"
           " over 25 % of the run. <!-- from benchmarks/results/r.json#idle: teacher, -gap -->\n\n"
           "Busy: 79.50 % and 81.01 %.\n<!-- from benchmarks/results/r.json#busy: teacher -->\n\n"
           "Nothing to check: 0.57 steps/s.\n<!-- from benchmarks/results/r.json#idle: steps_per_s -->\n\n"
           "Runs: 70.0 % and 71.25 %; printed 85.69 %.\n"
           "<!-- from benchmarks/results/r.json#runs.*: top1; benchmarks/results/r.json#idle: line -->\n\n"
           "Gap +4.68 and 4.7 points.\n<!-- from benchmarks/results/r.json#idle: gap -->\n\n"
           "Shown in code: `<!-- from benchmarks/results/none.json -->`\n")
    found = claims(doc, "doc")
    assert [c.where for c in found] == ["doc:6", "doc:8", "doc:11", "doc:14", "doc:17", "doc:20"]
    assert [c.figures for c in found] == [("81.01", "-4.68"), ("81.0", "4.7"), ("79.50", "81.01"), (),
                                          ("70.0", "71.25", "85.69"), ("4.68", "4.7")]
    # 81.01 is the idle run's teacher, and busy's only at its undeclared "random"; +4.68 and 4.7 have the wrong sign
    assert [missing(c, tmp_path) for c in found if c.figures] == [[], [], ["81.01"], [], ["4.68", "4.7"]]
    with pytest.raises(AssertionError, match="no key 'slow'"):
        load_source("benchmarks/results/r.json#slow: teacher", tmp_path)
    with pytest.raises(AssertionError, match="no key 'speed'"):
        load_source("benchmarks/results/r.json#idle: speed", tmp_path)
    with pytest.raises(AssertionError, match="declare the keys"):
        load_source("benchmarks/results/r.json#idle", tmp_path)
    with pytest.raises(AssertionError, match="names no number"):
        load_source("benchmarks/results/r.json: runs", tmp_path)
    with pytest.raises(AssertionError, match="does not exist"):
        load_source("benchmarks/results/gone.json: x", tmp_path)
