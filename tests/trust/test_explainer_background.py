"""``--explainer-background`` files: .npy and .csv rows, a CSV header's names, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelhost import errors
from modelhost.trust.explainers.background import (
    MAX_BACKGROUND_ROWS,
    load_background,
    zero_background,
)
from modelhost.trust.explainers.served import explainer_from_settings


def test_npy_and_csv_rows_load_with_the_csv_header_as_feature_names(tmp_path: Path) -> None:
    rows = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "rows.npy", rows)
    loaded = load_background(tmp_path / "rows.npy")
    np.testing.assert_array_equal(loaded.rows, rows)
    assert loaded.feature_names is None
    (tmp_path / "rows.csv").write_text("age,gender,income\n1,0,50000\n2,1,60000\n")
    named = load_background(tmp_path / "rows.csv")
    assert named.feature_names == ("age", "gender", "income")
    np.testing.assert_array_equal(named.rows, [[1, 0, 50000], [2, 1, 60000]])
    (tmp_path / "bare.csv").write_text("1,2\n3,4\n")
    assert load_background(tmp_path / "bare.csv").rows.shape == (2, 2)
    assert zero_background(3).rows.tolist() == [[0.0, 0.0, 0.0]]


def test_a_large_file_is_sampled_the_same_way_every_time(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.arange(1000.0).reshape(500, 2))
    first = load_background(tmp_path / "big.npy").rows
    assert first.shape == (MAX_BACKGROUND_ROWS, 2)
    np.testing.assert_array_equal(first, load_background(tmp_path / "big.npy").rows)


@pytest.mark.parametrize(
    ("name", "content"),
    [("rows.txt", "1,2"), ("rows.csv", "a,b\n1,x\n"), ("rows.csv", ""), ("missing.npy", None)],
)
def test_bad_background_files_are_refused(tmp_path: Path, name: str, content: str | None) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(errors.InvalidInput, match="--explainer-background"):
        load_background(tmp_path / name)


def test_a_background_needs_an_explainer() -> None:
    assert explainer_from_settings("") is None
    with pytest.raises(errors.InvalidInput, match="--explainer shap"):
        explainer_from_settings("", "rows.npy")
    with pytest.raises(errors.InvalidInput):
        explainer_from_settings("anchors")
