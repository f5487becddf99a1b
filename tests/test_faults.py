"""Fault suite: bad inputs and faults, each run as a real `dglm` subprocess.

Every case asserts the exit code, that stderr is the one line `dglm: error: ...` (never a traceback),
and the state of every file it touched afterwards. The exit codes are the ones README.md's
"Errors and exit codes" table documents (checked by test_readme_documents_every_exit_code).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dglm_cli.bundle import MANIFEST

FAST = ["--steps", "2", "--max-new-tokens", "3", "-q"]
INPUT, OTHER, BUNDLE, ASSET, INTERRUPTED = 2, 1, 3, 4, 130
ROOT = Path(__file__).resolve().parents[1]


def dglm(*args, input=None, stdin=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    environment = os.environ | {"PYTHONPATH": str(ROOT / "src")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "dglm_cli", *map(str, args)], input=input, stdin=stdin, capture_output=True, text=True,
        timeout=timeout, env=environment,
    )


def one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Assert `result` failed with `code` and exactly one stderr line `dglm: error: ...` holding every fragment."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dglm: error: "), result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def generate(bundle, *args, **kwargs):
    return dglm("generate", "--bundle", bundle, *args, *FAST, **kwargs)


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle", symlinks=True))


def rehash(bundle: Path, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> None:
    """Rewrite the manifest's digests as a crafted bundle would (so only dglm's other checks can catch it)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    files = {key: value for key, value in manifest["files"].items() if key not in drop}
    for key in [*files, *add]:
        path = bundle / key
        files[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "0" * 64
    (bundle / MANIFEST).write_text(json.dumps({**manifest, "files": files}))


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture(scope="module")
def records_file(tiny_bundle, tmp_path_factory):
    """A complete output of 4 records (2 prompts x 2 samples), and the arguments that wrote it."""
    out = tmp_path_factory.mktemp("records") / "out.jsonl"
    args = ["-p", "One", "-p", "Two", "-n", "2", "-o", out]
    result = generate(tiny_bundle, *args)
    assert result.returncode == 0, result.stderr
    return out.read_bytes(), args


def with_output(args, out):
    return [*args[:-1], out]


# ---------------------------------------------------------------- --output never loses data


@pytest.mark.parametrize(
    "content",
    [b"my notes\nsecond line without a newline", bytes(range(256)) * 8, b'{"id": "x"}\nplain text at the end'],
    ids=["notes-without-final-newline", "binary", "records-then-text"],
)
def test_output_that_is_not_records_is_refused_untouched(tiny_bundle, tmp_path, content):
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    one_line_error(generate(tiny_bundle, "-p", "Hi", "-o", out), INPUT, "refusing to append", "unchanged")
    assert out.read_bytes() == content


def test_a_complete_last_record_without_newline_is_kept(tiny_bundle, records_file, tmp_path):
    complete, args = records_file
    out = tmp_path / "out.jsonl"
    lines = complete.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-2]) + lines[-2].rstrip(b"\n"))  # 3 records, the last without its newline
    result = generate(tiny_bundle, *with_output(args, out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == complete  # the kept record is not regenerated, the missing one is
    again = generate(tiny_bundle, *with_output(args, out)[:-2], "--seed", "5", "-o", out)
    assert again.returncode == 0 and sorted(ids(out)) == sorted(set(ids(out)))


def test_a_torn_tail_is_cut_and_regenerated(tiny_bundle, records_file, tmp_path):
    complete, args = records_file
    out = tmp_path / "out.jsonl"
    lines = complete.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    result = generate(tiny_bundle, *with_output(args, out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == complete


def test_two_writers_on_one_output_neither_duplicate_nor_interleave(tiny_bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "dglm_cli", "generate", "--bundle", str(tiny_bundle), "-p", "A", "-p", "B", "-n", "4",
               "-o", str(out), *FAST]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    second = dglm(*command[3:])
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    if second.returncode != 0:  # the usual case: the first still held the file
        one_line_error(second, INPUT, "being written by another dglm process")
    assert len(ids(out)) == 8 and len(set(ids(out))) == 8


def test_an_output_created_for_a_failed_run_is_removed(tmp_path):
    out = tmp_path / "new.jsonl"
    one_line_error(dglm("generate", "--bundle", tmp_path / "no-bundle", "-p", "Hi", "-o", out, *FAST), BUNDLE, "bundle not found")
    assert not out.exists()


# ---------------------------------------------------------------- bundles are closed


def test_bundle_checks_pass_on_an_intact_copy(bundle_copy):
    result = dglm("bundle", "info", bundle_copy, "--verify")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("reference", [
    {"kind": "embedded", "path": "../outside-model"},
    {"kind": "embedded", "path": "/etc"},
    {"kind": "path", "path": "/tmp/some-model"},
], ids=["embedded-dotdot", "embedded-absolute", "path-outside"])
def test_model_references_outside_the_bundle_are_refused(bundle_copy, reference):
    edit_json(bundle_copy / "encoder" / "config.json", reference=reference)
    rehash(bundle_copy)
    one_line_error(generate(bundle_copy, "-p", "Hi"), BUNDLE, "outside the bundle")


def test_an_unlisted_pickle_in_place_of_safetensors_is_refused(bundle_copy):
    model = bundle_copy / "decoder" / "lm"
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    rehash(bundle_copy, drop=("decoder/lm/model.safetensors",))
    one_line_error(generate(bundle_copy, "-p", "Hi"), BUNDLE, "decoder/lm/pytorch_model.bin is not listed in the manifest")
    rehash(bundle_copy, add=("decoder/lm/pytorch_model.bin",))  # listed with its digest: still never a pickle
    one_line_error(generate(bundle_copy, "-p", "Hi"), BUNDLE, "pytorch_model.bin is not a kind of file dglm loads")


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "missing"])
def test_manifest_keys_outside_the_bundle_are_refused_without_saying_whether_they_exist(bundle_copy, tmp_path, exists):
    if exists:
        (tmp_path / "secret.json").write_text("{}")
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["files"]["../secret.json"] = "0" * 64
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    line = one_line_error(dglm("bundle", "info", bundle_copy, "--verify"), BUNDLE, "names a path outside the bundle: '../secret.json'")
    assert "missing" not in line and "checksum" not in line


def test_symlinks_out_of_the_bundle_are_refused(bundle_copy, tmp_path):
    config = bundle_copy / "denoiser" / "config.json"
    outside = tmp_path / "outside-config.json"
    shutil.copy(config, outside)
    config.unlink()
    config.symlink_to(outside)  # same bytes, so the digest alone would accept it
    one_line_error(generate(bundle_copy, "-p", "Hi"), BUNDLE, "denoiser/config.json is a symbolic link out of the bundle")

