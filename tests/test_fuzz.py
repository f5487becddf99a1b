"""Property-based fuzz (hypothesis) of the readers of user files and of NAME:WEIGHT: whatever the bytes,
the result is a value or an InputError (one line for the CLI), never another exception."""

import io
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dglm_cli.attributes import AttributeSpec
from dglm_cli.errors import InputError
from dglm_cli.records import read_prompts, scan_records
from dglm_cli.scoring import RecordReader
from dglm_cli.validation import RULES, weighted_name

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
RECORD = st.fixed_dictionaries({"id": st.text(max_size=10)}, optional={"prompt": st.text(max_size=10), "n": JSON_VALUES})
LINE = st.one_of(
    st.binary(max_size=40),
    RECORD.map(lambda r: json.dumps(r).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b'{"id": ' + b"9" * 5000 + b"}", b"[" * 5000, b'{"id": "a"', b"\xef\xbb\xbf{}", b"NaN", b'{"id": NaN}']),
)
FILE = st.lists(LINE, max_size=6).flatmap(lambda lines: st.booleans().map(lambda end: b"\n".join(lines) + (b"\n" if end else b"")))


@FUZZ
@given(FILE)
def test_scan_records_returns_a_plan_or_refuses(data):
    try:
        ids, keep, newline = scan_records(data, "out.jsonl")
    except InputError as error:
        assert "\n" not in str(error) and "unchanged" in str(error)
        return
    assert keep is None or 0 <= keep <= len(data)
    assert not (keep is not None and newline)
    assert all(isinstance(i, str) for i in ids)
    kept = data if keep is None else data[:keep]
    assert all(not line.strip() or json.loads(line)["id"] in ids for line in kept.split(b"\n")[:-1])  # complete lines are records


@FUZZ
@given(FILE)
def test_read_prompts_gives_prompts_or_an_input_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "prompts.txt"
    path.write_bytes(data)
    try:
        prompts = read_prompts(path)
    except InputError as error:
        assert "\n" not in str(error).strip() or str(path) in str(error)
        return
    assert prompts and all(isinstance(p.text, str) and isinstance(p.id, str) for p in prompts)


@FUZZ
@given(FILE)
def test_record_reader_gives_items_or_an_input_error(data):
    reader = RecordReader(io.BytesIO(data), "r.jsonl", skip_bad=False)
    try:
        items = list(reader)
    except InputError:
        return
    assert all(isinstance(item.text, str) for item in items)
    skipping = RecordReader(io.BytesIO(data), "r.jsonl", skip_bad=True)
    assert len(list(skipping)) == len(items) and not skipping.skipped


NAME = st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)
WEIGHT = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                   st.sampled_from(["nan", "inf", "-inf", "1e999", "0", "-0", "1_0", " 2 ", "0x10", "", "1e-400"]))


@FUZZ
@given(st.lists(NAME, min_size=1, max_size=3), st.none() | WEIGHT)
def test_name_weight_parser_gives_a_finite_weight_in_range_or_an_input_error(names, weight):
    text = ":".join(names + ([weight] if weight is not None else []))
    for parse in (weighted_name, AttributeSpec.parse):
        try:
            parsed = parse(text)
        except InputError as error:
            assert "\n" not in str(error)
            continue
        value = parsed[1] if isinstance(parsed, tuple) else parsed.weight
        assert math.isfinite(value) and RULES["weight"].holds(value)
