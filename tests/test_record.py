"""The record schema: written records validate, broken ones are refused naming the file."""

import json

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cq.record import RECORD_SCHEMA, SCHEMA_ID, SCORE_KEYS, RecordError, read_record, validate, write_record


def minimal(**over):
    record = {
        "schema": SCHEMA_ID, "status": "error", "error": "x.png: broken",
        "image": {"path": "x.png", "sha256": None, "width": None, "height": None, "notes": []},
        "method": "kmeans", "base_method": "kmeans", "method_version": "1", "params": {}, "k": 37,
        "weights": {"mse": 2, "max_cost": 21, "mean_cost": 42},
        "scoring_version": "2", "scores": {k: None for k in SCORE_KEYS},
        "n_colors": None, "palette": [], "wall_time_s": 0.1, "peak_memory_mb": 10.0, "device": "cpu",
        "versions": {"cq": "0.1.0"}, "created": "2026-11-25T00:00:00+00:00",
    }
    record.update(over)
    return record


def test_round_trip(tmp_path):
    write_record(tmp_path / "r.json", minimal())
    assert read_record(tmp_path / "r.json") == minimal()


def test_invalid_records_are_refused_naming_the_file(tmp_path):
    with pytest.raises(RecordError, match="status"):
        validate(minimal(status="fine"))
    with pytest.raises(RecordError, match="palette/0"):
        validate(minimal(palette=[[1, 2, 300]]))
    p = tmp_path / "cut.json"
    p.write_text(json.dumps(minimal())[:50])
    with pytest.raises(RecordError, match="cut.json"):
        read_record(p)


def test_an_invalid_record_is_not_written_and_the_old_one_stays(tmp_path):
    path = tmp_path / "r.json"
    write_record(path, minimal())
    before = path.read_bytes()
    with pytest.raises(RecordError, match="status"):
        write_record(path, minimal(status="fine"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_non_finite_numbers_are_never_written(tmp_path):
    """NaN and infinity are not JSON: such a record is refused and nothing is written."""
    bad = minimal(wall_time_s=float("nan"))
    with pytest.raises(ValueError):
        write_record(tmp_path / "r.json", bad)
    assert not list(tmp_path.iterdir())



_VALUES = st.one_of(st.integers(-2, 300), st.floats(-2, 300), st.just(float("nan")), st.booleans(), st.none(),
                    st.text(max_size=2), st.sampled_from([0.0, 255.0, 2.5, 255, 256]))
_ENTRIES = st.one_of(st.lists(_VALUES, min_size=2, max_size=4), _VALUES,
                     st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(list))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRIES, max_size=6))
@example([[0, 255, 2.0]])
@example([[True, 0, 0]])
@example([[0, 0, 255.5]])
@example([[float("nan"), 0, 0]])
@example([[float("inf"), 0, 0]])
def test_fast_check_accepts_exactly_what_the_schema_accepts(palette):
    # Oracle: the full schema through jsonschema; validate's fast path must agree with it.
    record = minimal(palette=palette)
    expected = jsonschema.Draft202012Validator(RECORD_SCHEMA).is_valid(record)
    try:
        validate(record)
        accepted = True
    except RecordError as e:
        accepted = False
        assert "palette" in str(e)
    assert accepted == expected
