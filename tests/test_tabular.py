"""Reading labeled tables: formats, column detection, and one-line errors for every bad input."""

import io
import sys

import pytest

from dglm_cli.errors import InputError
from dglm_cli.tabular import read_labeled


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_csv_with_quotes_commas_and_a_bom(tmp_path):
    path = write(tmp_path, "data.csv", '\ufefftext,label\n"Good, really good",pos\n"She said ""no""",neg\n')
    rows = read_labeled(path)
    assert rows.texts == ["Good, really good", 'She said "no"'] and rows.labels == ["pos", "neg"]
    assert (rows.text_col, rows.label_col, rows.format) == ("text", "label", "csv")


def test_tsv_and_jsonl_detected_from_content(tmp_path):
    tsv = read_labeled(write(tmp_path, "data.txt", "sentence\tsentiment\nfine, thanks\t1\nawful\t0\n"))
    assert tsv.format == "tsv" and tsv.texts == ["fine, thanks", "awful"] and tsv.labels == ["1", "0"]
    jsonl = read_labeled(write(tmp_path, "data", '{"review": "ok", "class": 2}\n\n{"review": "bad", "class": true}\n'))
    assert jsonl.format == "jsonl" and jsonl.labels == ["2", "true"] and jsonl.lines == [1, 3]


def test_extension_wins_and_format_flag_overrides(tmp_path):
    path = write(tmp_path, "data.csv", "text\tlabel\na, b\tx\nc\ty\n")
    assert read_labeled(path, format="tsv").texts == ["a, b", "c"]
    with pytest.raises(InputError, match="--format"):
        read_labeled(path, format="xlsx")


def test_common_names_and_two_column_fallback(tmp_path):
    rows = read_labeled(write(tmp_path, "d.csv", "id,Content,Target\n1,hello,a\n2,bye,b\n"))
    assert (rows.text_col, rows.label_col) == ("Content", "Target")
    two = read_labeled(write(tmp_path, "e.csv", "body_text,stars\nhello,5\nbye,1\n"), label_col="stars")
    assert two.text_col == "body_text"
    given = read_labeled(write(tmp_path, "f.csv", "a,b,c\nx,y,z\n"), text_col="c", label_col="a")
    assert given.texts == ["z"] and given.labels == ["x"]


def test_stdin(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"text,label\nhi,a\nho,b\n")))
    rows = read_labeled("-")
    assert rows.source == "-" and rows.texts == ["hi", "ho"]


@pytest.mark.parametrize(
    "name, content, kwargs, expected",
    [
        ("empty.csv", "  \n\n", {}, "is empty"),
        ("header.csv", "text,label\n", {}, "no data rows"),
        ("missing.csv", "text,label\nhi,a\n", {"label_col": "lable"}, "'lable' is not a column.*did you mean 'label'.*columns: text, label"),
        ("unknown.csv", "words,kind,extra\nhi,a,b\n", {}, "which column.*holds the text; columns: words, kind, extra"),
        ("ragged.csv", "text,label\nhi,a\nhey,there,b\n", {}, "line 3: 3 fields, but the header has 2"),
        ("bad.jsonl", '{"text": "hi", "label": "a"}\n{"text": "oops", label: b}\n', {}, "line 2: not valid JSON"),
        ("list.jsonl", '["hi", "a"]\n', {}, "line 1: expected a JSON object"),
        ("nolabel.csv", "text,label\nhi,a\nho, \n", {}, "line 3: the label column 'label' is empty"),
        ("nulllabel.jsonl", '{"text": "hi", "label": "a"}\n{"text": "ho", "label": null}\n', {}, "line 2: the label column"),
        ("same.csv", "text,label\nhi,a\n", {"text_col": "text", "label_col": "text"}, "both 'text'"),
        ("quote.csv", 'text,label\n"unterminated,a\n', {}, "malformed CSV"),
    ],
)
def test_bad_input_is_one_line_naming_the_problem(tmp_path, name, content, kwargs, expected):
    with pytest.raises(InputError, match=expected) as caught:
        read_labeled(write(tmp_path, name, content), **kwargs)
    assert "\n" not in str(caught.value)


def test_non_utf8_names_the_line_and_byte(tmp_path):
    path = write(tmp_path, "latin.csv", "text,label\nok,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"line 3: not UTF-8 text \(byte 0xe9\)"):
        read_labeled(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_labeled(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_labeled(tmp_path)
