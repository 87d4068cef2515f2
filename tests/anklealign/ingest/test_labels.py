"""Label vocabulary and Label Studio export parsing."""

from __future__ import annotations

import json

import pytest

from anklealign.ingest.labels import normalize_label
from anklealign.ingest.labelstudio import ExportError, parse_export

from ..conftest import export, task


@pytest.mark.parametrize(("raw", "class_id"), [
    ("1_Pronacio", 0), ("2_Neutralis", 1), ("3_Szupinacio", 2),
    ("pronation", 0), ("neutral", 1), ("supination", 2),
    ("1_Pronáló", 0), ("2_Neutrális", 1), ("3_Szupináló", 2),
    ("2_Neutrális ", 1), ("3_Szupináló ", 2), (" 1_Pronacio", 0), ("2_Neutrális\u00a0", 1),
    ("2_Neutra\u0301lis", 1),                       # decomposed accent
    ("Normal", 1), ("NEUTRAL", 1), ("12_supination", 2), ("Supinated", 2),
    ("4_Egyeb", None), ("", None), ("pron", None), ("other", None), ("1_", None), ("neutral_pronation", 1),
])
def test_normalize_label(raw: str, class_id: int | None) -> None:
    assert normalize_label(raw) == class_id


def test_standard_export_with_bom() -> None:
    data = "\ufeff".encode() + export(task("photo 01.jpg", "2_Neutrális "))
    [parsed] = parse_export(data)
    assert (parsed.name, parsed.label, parsed.raw_label, parsed.status) == ("photo 01.jpg", 1, "2_Neutrális ",
                                                                             "labelled")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty file"), (b"  \n", "empty file"), (b"[{]", "invalid JSON"),
    (b'{"tasks": 3}', "not a Label Studio export"), (b"\xff\xfe[]", "not UTF-8"),
])
def test_unusable_export(data: bytes, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        parse_export(data)


def test_task_states() -> None:
    cancelled_then_done = task("c.jpg", "1_Pronacio")
    cancelled_then_done["annotations"].insert(0, {"was_cancelled": True, "result": []})
    no_annotation = task("n.jpg", None)
    no_annotation["annotations"] = []
    tasks = parse_export(export(task("a.jpg", None), task("b.jpg", "3_Szupinacio", cancelled=True),
                                cancelled_then_done, no_annotation, task("u.jpg", "4_Egyeb")))
    assert [(t.name, t.label, t.status) for t in tasks] == [
        ("a.jpg", None, "empty result"), ("b.jpg", None, "cancelled"), ("c.jpg", 0, "labelled"),
        ("n.jpg", None, "no annotation"), ("u.jpg", None, "unknown label")]


def test_json_min_export() -> None:
    data = json.dumps([{"image": "/data/upload/1/0badf00d-x.jpg", "choice": "pronation"}]).encode()
    [parsed] = parse_export(data)
    assert (parsed.name, parsed.label) == ("x.jpg", 0)

