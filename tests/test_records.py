"""Data layer: schema validation with clear errors, and atomic writes that never leave partial output."""

import json
import os

import pytest

from src.records import RecordError, load_dataset, load_records, write_json, write_jsonl

GOOD = [{"item_id": "gsm8k_0", "question": "1+1?", "answer_cot": "1+1=2\nThe answer is 2", "answer_value": "2"}]


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_json_and_jsonl_load(tmp_path):
    p = _write(tmp_path, "a.json", json.dumps(GOOD))
    assert load_records(p) == GOOD
    q = _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in GOOD * 3))
    assert len(load_records(q)) == 3
    ds = load_dataset(p)
    assert ds[0]["answer_value"] == "2"


def test_missing_field_names_file_record_and_field(tmp_path):
    bad = GOOD + [{"item_id": "gsm8k_1", "question": "q", "answer_value": "3"}]
    p = _write(tmp_path, "bad.json", json.dumps(bad))
    with pytest.raises(RecordError, match=r"bad\.json: record 1 \(item_id=gsm8k_1\): missing field 'answer_cot'"):
        load_records(p)


def test_wrong_type_names_field(tmp_path):
    bad = [{**GOOD[0], "answer_value": 2}]
    p = _write(tmp_path, "t.json", json.dumps(bad))
    with pytest.raises(RecordError, match=r"record 0 .*field 'answer_value' should be str, got int"):
        load_records(p)


def test_bad_json_gives_location(tmp_path):
    p = _write(tmp_path, "broken.json", '[{"item_id": "x",\n "question": }]')
    with pytest.raises(RecordError, match=r"broken\.json: invalid JSON at line 2"):
        load_records(p)
    q = _write(tmp_path, "broken.jsonl", json.dumps(GOOD[0]) + "\n{oops\n")
    with pytest.raises(RecordError, match=r"broken\.jsonl: line 2: invalid JSON"):
        load_records(q)


@pytest.mark.parametrize("text,msg", [("", "the file is empty"), ("[]", "no records"), ("{}", "expected a JSON list")])
def test_empty_or_not_a_list(tmp_path, text, msg):
    p = _write(tmp_path, "e.json", text)
    with pytest.raises(RecordError, match=msg):
        load_records(p)


def test_missing_file(tmp_path):
    with pytest.raises(RecordError, match="file not found"):
        load_records(tmp_path / "nope.json")


def test_sampling_result_schema(tmp_path):
    rec = {**GOOD[0], "pred": ["a"], "pred_value": ["2"]}
    p = _write(tmp_path, "r.json", json.dumps([rec]))
    with pytest.raises(RecordError, match="missing field 'correct_pred'"):
        load_records(p, "sampling_result")


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "out" / "res.json"
    write_json(p, [1, 2, 3])
    write_json(p, [4])  # a rerun replaces, never appends
    assert json.loads(p.read_text()) == [4]
    assert os.listdir(p.parent) == ["res.json"]
    write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, {"a": 2}])
    write_jsonl(tmp_path / "x.jsonl", [{"a": 3}])
    assert (tmp_path / "x.jsonl").read_text().splitlines() == ['{"a": 3}']


def test_failed_write_keeps_old_file_and_no_partial(tmp_path):
    p = tmp_path / "res.json"
    write_json(p, {"ok": True})
    with pytest.raises(TypeError):
        write_json(p, {"bad": object()})  # serialisation fails half-way
    assert json.loads(p.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["res.json"]


def test_item_ids_unique_in_pools_test_sets_and_results_not_in_training_data(tmp_path):
    twice = [GOOD[0], {**GOOD[0], "answer_cot": "another rationale\nThe answer is 2"}]
    p = _write(tmp_path, "twice.json", json.dumps(twice))
    assert len(load_records(p, "train")) == 2  # several rationales of one item: the training data's layout
    for schema in ("pool", "test"):
        with pytest.raises(RecordError, match=r"twice\.json: records 0 and 1 share item_id=gsm8k_0"):
            load_records(p, schema)


def test_undecodable_or_unreadable_input_names_the_file(tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes(b'[{"item_id": "caf\xe9"}]')
    with pytest.raises(RecordError, match=r"latin1\.json: not UTF-8 text \(byte 17"):
        load_records(p)
    with pytest.raises(RecordError, match="a folder, not a file"):
        load_records(tmp_path)
