"""Dataset registry and the real data files of ../shared/data."""

import pytest

from src.records import load_records
from src.registry import DATASETS, get_dataset


def test_registry_lookup_and_aliases():
    assert get_dataset("aqua").file_stem == "aqua_rat"
    assert get_dataset("aqua_rat").name == "aqua"
    assert get_dataset("mathqa").answer_format == "choice_lower"
    assert get_dataset("gsm8k").reset_cut == "lines"
    assert get_dataset("math").reset_cut == "token_fraction"
    with pytest.raises(ValueError, match="known datasets: .*gsm8k"):
        get_dataset("gsm9k")
    assert {"gsm8k", "math", "aqua", "mathqa", "svamp", "theoremqa", "synthetic"} <= set(DATASETS)


@pytest.mark.parametrize("name", ["gsm8k", "aqua", "mathqa", "svamp", "theoremqa"])
def test_shared_test_files_validate(shared_data, name):
    spec = get_dataset(name)
    records = load_records(spec.test_file(shared_data), "test")
    assert len(records) > 100
    assert all(r["item_id"].startswith(spec.file_stem) for r in records)


@pytest.mark.parametrize("name", ["gsm8k", "aqua", "math"])
def test_shared_pool_files_validate(shared_data, name):
    records = load_records(get_dataset(name).pool_file("cot", shared_data), "train")
    assert len(records) >= 1000
