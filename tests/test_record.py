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


def _accepts(record) -> bool:
    try:
        validate(record)
        return True
    except RecordError:
        return False


def _oracle(record) -> bool:
    """The full schema through jsonschema, an implementation independent of validate's."""
    return jsonschema.Draft202012Validator(RECORD_SCHEMA).is_valid(record)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTRIES, max_size=6))
@example([[0, 255, 2.0]])
@example([[True, 0, 0]])
@example([[0, 0, 255.5]])
@example([[float("nan"), 0, 0]])
@example([[float("inf"), 0, 0]])
def test_palettes_are_checked_as_the_schema_says(palette):
    record = minimal(palette=palette)
    assert _accepts(record) == _oracle(record)


_FIELDS = [(key,) for key in minimal()] + [("image", key) for key in minimal()["image"]] + \
    [("weights", key) for key in minimal()["weights"]] + [("scores", key) for key in SCORE_KEYS]
_ANY = st.one_of(_VALUES, st.lists(_VALUES, max_size=3), st.dictionaries(st.text(max_size=2), _VALUES, max_size=2),
                 st.sampled_from(["ok", "error", SCHEMA_ID, "a" * 64, "a" * 64 + "\n", "A" * 64, 1e300, -0.0]))
_DELETE = object()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIELDS), st.one_of(_ANY, st.just(_DELETE))), min_size=1, max_size=3))
@example([(("image", "sha256"), "a" * 64 + "\n")])
@example([(("k",), True)])
@example([(("k",), 2.0)])
@example([(("status",), "fine")])
@example([(("scores",), _DELETE), (("scores", "score"), float("nan"))])  # a field of a removed section
def test_validate_accepts_exactly_what_the_schema_accepts(changes):
    """Any field set to any JSON value (or removed): validate agrees with the oracle, and a
    refusal names the field."""
    record = minimal(image=dict(minimal()["image"]), weights=dict(minimal()["weights"]),
                     scores=dict(minimal()["scores"]))
    for path, value in changes:
        parent = record.get(path[0]) if len(path) == 2 else record
        if isinstance(parent, dict):
            if value is _DELETE:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = value
    expected = _oracle(record)
    assert _accepts(record) == expected
    if not expected:
        with pytest.raises(RecordError, match="invalid record at "):
            validate(record, "r.json")
