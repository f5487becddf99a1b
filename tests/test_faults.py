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
    kept = b"".join(complete.splitlines(keepends=True)[:3])
    out.write_bytes(kept.rstrip(b"\n"))  # 3 records, the last without its newline
    other_seed = generate(tiny_bundle, *args[:-2], "--seed", "5", "-o", out)  # other ids: nothing of the file is regenerated
    assert other_seed.returncode == 0, other_seed.stderr
    assert out.read_bytes().startswith(kept) and len(ids(out)) == 3 + 4 == len(set(ids(out)))
    same = generate(tiny_bundle, *with_output(args, out))  # the original run's missing 4th record, and only that
    assert same.returncode == 0 and len(ids(out)) == 8 and out.read_bytes().startswith(kept)


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


# ---------------------------------------------------------------- the table: one bad input per case

HUGE = b"9" * 5000
BIG_LINE = b"a" * (50 << 20)
LABELED = b"".join(b"good text %d,pos\nbad text %d,neg\n" % (i, i) for i in range(10))


class Case:
    """`dglm ARGS` with FILES written first ({tmp} and {bundle} are substituted in ARGS), expecting exit CODE
    and one stderr line holding FRAGMENT; every file present before is unchanged afterwards."""

    def __init__(self, id, args, code, fragment, files=None, stdin=None, closed_stdin=False, bundle="shared", setup=None, new_files=()):
        self.id, self.args, self.code, self.fragment = id, args, code, fragment
        self.files, self.stdin, self.closed_stdin, self.bundle, self.setup, self.new_files = files or {}, stdin, closed_stdin, bundle, setup, new_files


def _truncate_weights(bundle: Path) -> None:
    weights = bundle / "denoiser" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rehash(bundle)


def _huge_header(bundle: Path) -> None:
    weights = bundle / "denoiser" / "model.safetensors"
    weights.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    rehash(bundle)


def _edit_digest(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["denoiser/config.json"] = "f" * 64
    (bundle / MANIFEST).write_text(json.dumps(manifest))


GEN = ["generate", "--bundle", "{bundle}", "-p", "Hi", *FAST]
CLF = ["train-classifier", "{tmp}/data.csv", "--bundle", "{bundle}", "-q"]
CASES = [
    # generate: every number finite and in range, before any model loads
    *(Case(f"generate{flag}={value}", [*GEN, flag, value], INPUT, fragment) for flag, value, fragment in [
        ("--attr", "positive:nan", "finite"), ("--attr", "positive:inf", "finite"), ("--attr", "positive:-1", "use --avoid"),
        ("--avoid", "positive:1e999", "finite"), ("--attr", "positive:5000", "the weight must be in (0, 1000]"),
        ("--attr", "a:b:c:2", "cannot parse attribute 'a:b:c:2'"), ("--avoid", ":positive", "cannot parse attribute"),
        ("--guidance", "inf", "--guidance must be a finite number"), ("--guidance", "nan", "finite"), ("--guidance", "-1", "--guidance must be >= 0"),
        ("--cfg", "nan", "--cfg must be a finite number"), ("--cfg", "-5", "--cfg must be >= 0"), ("--decoder-cfg", "inf", "--decoder-cfg"),
        ("--steer", "nan", "--steer must be a finite number"), ("--steer", "-1", "--steer must be >= 0"),
        ("--top-p", "0", "--top-p must be in (0, 1]"), ("--top-p", "1.5", "--top-p"), ("--temperature", "-1", "--temperature"),
        ("--repetition-penalty", "0", "--repetition-penalty"), ("--renoise", "0", "--renoise"), ("--seed", "-1", "--seed must be in"),
        ("--steps", "0", "--steps must be in [1, 10000]"), ("--num-samples", "0", "--num-samples"), ("--batch-size", "0", "--batch-size"),
        ("--mc-samples", "0", "--mc-samples"), ("--steps", "abc", "Invalid value for '--steps'"), ("--bogus", "1", "No such option"),
        ("--sampler", "euler", "--sampler must be one of"),
    ]),
    Case("generate-no-prompt", ["generate", "--bundle", "{bundle}"], INPUT, "give --prompt TEXT"),
    Case("generate-prompts-missing", [*GEN, "--prompts", "{tmp}/none.txt"], INPUT, "file not found"),
    Case("generate-prompts-directory", [*GEN, "--prompts", "{tmp}"], INPUT, "is a directory"),
    Case("generate-prompts-not-utf8", [*GEN, "--prompts", "{tmp}/p.txt"], INPUT, "not UTF-8", files={"p.txt": b"ok\n\xff\xfe\n"}),
    Case("generate-prompts-huge-id", [*GEN, "--prompts", "{tmp}/p.jsonl"], INPUT, "digits", files={"p.jsonl": b'{"id": ' + HUGE + b', "prompt": "x"}\n'}),
    Case("generate-prompts-bad-json", [*GEN, "--prompts", "{tmp}/p.jsonl"], INPUT, "p.jsonl:2: not valid JSON",
         files={"p.jsonl": b'{"prompt": "x"}\n{"prompt": \n'}),
    Case("generate-prompts-empty", [*GEN, "--prompts", "{tmp}/p.txt"], INPUT, "no prompts found", files={"p.txt": b"\n\n"}),
    Case("generate-prompts-stdin-closed", [*GEN, "--prompts", "-"], INPUT, "standard input is closed", closed_stdin=True),
    Case("generate-too-long", [*GEN[:-5], "--max-new-tokens", "100000", "-q"], INPUT, "exceed the decoder's limit of 256 positions"),
    Case("generate-output-under-proc", [*GEN, "-o", "/proc/dglm/out.jsonl"], INPUT, "cannot write --output"),
    Case("generate-output-directory", [*GEN, "-o", "{tmp}"], INPUT, "is not a file"),
    Case("generate-output-huge-number", [*GEN, "-o", "{tmp}/out.jsonl"], INPUT, "not a dglm record",
         files={"out.jsonl": b'{"id": "a", "n": ' + HUGE + b"}\n"}),
    Case("generate-bundle-missing", [*GEN[:2], "{tmp}/nothing", *GEN[3:]], BUNDLE, "bundle not found"),
    Case("generate-unknown-attr", [*GEN, "--attr", "no-such-label"], INPUT, "unknown attribute 'no-such-label'"),
    Case("generate-steer-without-one", [*GEN, "--steer", "1"], INPUT, "has no steer"),
    # sweep
    Case("sweep-scales-nan", ["sweep", "--prompts", "{tmp}/p.txt", "--attr", "positive", "--scales", "1,nan", "--bundle", "{bundle}"], INPUT,
         "--scales must be a finite number", files={"p.txt": b"Hi\n"}),
    Case("sweep-scales-words", ["sweep", "--prompts", "{tmp}/p.txt", "--attr", "positive", "--scales", "a,b"], INPUT, "comma-separated numbers",
         files={"p.txt": b"Hi\n"}),
    Case("sweep-disagreement", ["sweep", "--prompts", "{tmp}/p.txt", "--attr", "positive", "--max-disagreement", "2"], INPUT,
         "--max-disagreement must be in [0, 1]", files={"p.txt": b"Hi\n"}),
    # score
    Case("score-bad-line", ["score", "{tmp}/r.jsonl", "--no-ppl", "-q"], INPUT, "r.jsonl:2: not valid JSON",
         files={"r.jsonl": b'{"prompt": "a", "continuation": "b"}\nnot json\n'}),
    Case("score-missing-field", ["score", "{tmp}/r.jsonl", "--no-ppl", "-q"], INPUT, "no string field 'continuation'", files={"r.jsonl": b'{"x": 1}\n'}),
    Case("score-huge-number", ["score", "{tmp}/r.jsonl", "--no-ppl", "-q"], INPUT, "digits",
         files={"r.jsonl": b'{"prompt": "a", "continuation": "b", "n": ' + HUGE + b"}\n"}),
    Case("score-empty", ["score", "{tmp}/r.jsonl", "--no-ppl", "-q"], INPUT, "no records", files={"r.jsonl": b""}),
    Case("score-stdin-closed", ["score", "-", "--no-ppl", "-q"], INPUT, "standard input is closed", closed_stdin=True),
    Case("score-missing-file", ["score", "{tmp}/none.jsonl", "--no-ppl", "-q"], INPUT, "file not found"),
    Case("score-disagreement-nan", ["score", "{tmp}/none.jsonl", "--no-ppl", "--max-disagreement", "nan"], INPUT, "finite"),
    # train-classifier
    *(Case(f"train-classifier-{name}", CLF, INPUT, fragment, files={"data.csv": data}) for name, data, fragment in [
        ("empty", b"", "is empty"), ("header-only", b"text,label\n", "no data rows"),
        ("one-label", b"text,label\n" + b"".join(b"t %d,pos\n" % i for i in range(20)), "single class"),
        ("ragged", b"text,label\nhello,pos,extra\n", "3 fields, but the header has 2"), ("not-utf8", b"text,label\n\xff\xfe,pos\n", "not UTF-8"),
        ("bom", b"\xef\xbb\xbftext,label\n" + b"".join(b"t %d,pos\n" % i for i in range(20)), "the label column 'label' has a single class"),
        ("nul-bytes", b"text,label\nhel\x00lo,pos\nbye,neg\n", "only one row"), ("quoted-newlines", b'text,label\n"two\nlines",pos\nx,neg\n', "only one row"),
        ("50mb-line", b"text,label\n" + BIG_LINE + b",pos\nb,neg\n", "field larger than field limit"),
    ]),
    *(Case(f"train-classifier-name-{label}", [*CLF, "--name", name], INPUT, "invalid classifier name", files={"data.csv": b"text,label\n" + LABELED})
      for label, name in [("dotdot", "../x"), ("slash", "a/b"), ("300-chars", "a" * 300)]),
    Case("train-classifier-C-nan", [*CLF, "--C", "nan"], INPUT, "--C must be a finite number", files={"data.csv": LABELED}),
    Case("train-classifier-test-size", [*CLF, "--test-size", "1.5"], INPUT, "--test-size must be in (0, 1)", files={"data.csv": LABELED}),
    Case("train-classifier-stdin-closed", ["train-classifier", "-", "--bundle", "{bundle}", "-q"], INPUT, "standard input is closed",
         closed_stdin=True),
    # bundles
    Case("bundle-no-manifest", [*GEN], BUNDLE, "is not a dglm bundle", bundle="copy", setup=lambda b: (b / MANIFEST).unlink()),
    Case("bundle-edited-sha256", [*GEN], BUNDLE, "checksum mismatch for denoiser/config.json", bundle="copy", setup=_edit_digest),
    Case("bundle-truncated-safetensors", [*GEN], BUNDLE, "corrupt weights", bundle="copy", setup=_truncate_weights),
    Case("bundle-huge-safetensors-header", [*GEN], BUNDLE, "corrupt weights", bundle="copy", setup=_huge_header),
    Case("bundle-newer-format", [*GEN], BUNDLE, "upgrade dglm", bundle="copy", setup=lambda b: edit_json(b / MANIFEST, format_version=99)),
    # fetch without a network
    Case("fetch-offline", ["fetch", "org/not-cached"], ASSET, "not cached and offline mode is on"),
    Case("fetch-unreachable", ["fetch", "org/not-cached"], ASSET, "cannot reach the Hub", stdin=None),
    Case("fetch-unknown-name", ["fetch", "../../etc"], INPUT, "unknown asset"),
    # training
    Case("train-diffusion-empty-corpus", ["train-diffusion", "{tmp}/c.txt", "--run", "{tmp}/run", "--bundle", "{bundle}"], INPUT, "no documents found",
         files={"c.txt": b"\n"}),
    Case("train-diffusion-resume-nothing", ["train-diffusion", "--run", "{tmp}/run", "--resume"], INPUT, "holds no run"),
    Case("train-diffusion-lr-inf", ["train-diffusion", "--run", "{tmp}/run", "--resume", "--lr", "inf"], INPUT, "--lr must be a finite number"),
    Case("train-steer-strength-nan", ["train-steer", "--run", "{tmp}/run", "--resume", "--strength", "nan"], INPUT, "--strength"),
]
ENV = {"fetch-unreachable": {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault(case, tiny_bundle, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    bundle = tiny_bundle
    if case.bundle == "copy":
        bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
        case.setup(bundle)
    for name, data in case.files.items():
        (work / name).write_bytes(data)
    before, bundle_before = snapshot(work), snapshot(bundle)
    args = [str(a).replace("{tmp}", str(work)).replace("{bundle}", str(bundle)) for a in case.args]
    environment = os.environ | {"PYTHONPATH": str(ROOT / "src")} | ENV.get(case.id, {})
    result = subprocess.run(
        [sys.executable, "-m", "dglm_cli", *args], capture_output=True, text=True, timeout=300, env=environment,
        stdin=subprocess.DEVNULL, preexec_fn=(lambda: os.close(0)) if case.closed_stdin else None,
    )
    one_line_error(result, case.code, case.fragment)
    assert snapshot(work) == before, "a file was changed or created by a failed run"
    assert snapshot(bundle) == bundle_before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway")
@pytest.mark.parametrize("where", ["file", "directory"])
def test_output_that_cannot_be_written_fails_before_models_load(tiny_bundle, tmp_path, where):
    out = tmp_path / "ro" / "out.jsonl"
    out.parent.mkdir()
    if where == "file":
        out.write_text('{"id": "a"}\n')
        out.chmod(0o444)
    else:
        out.parent.chmod(0o555)
    try:
        one_line_error(generate(tmp_path / "no-bundle", "-p", "Hi", "-o", out), INPUT, "cannot write --output")
    finally:
        out.parent.chmod(0o755)


def test_sigint_and_sigkill_during_generate_leave_only_whole_records(tiny_bundle, tmp_path):
    import signal

    out = tmp_path / "out.jsonl"
    args = ["-p", "One", "-p", "Two", "-p", "Three", "-n", "6", "--batch-size", "1", "-o", out]
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "dglm_cli", "generate", "--bundle", str(tiny_bundle), *map(str, args), *FAST]
    for sig, code in [(signal.SIGINT, INTERRUPTED), (signal.SIGKILL, -signal.SIGKILL)]:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        start = len(ids(out)) if out.exists() else 0
        deadline = time.time() + 200
        while time.time() < deadline and process.poll() is None and (not out.exists() or len(ids(out)) <= start):
            time.sleep(0.02)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
        if process.returncode == 0:
            break  # finished before the signal arrived: nothing to check but the file
        assert process.returncode == code, err
        if sig == signal.SIGINT:
            assert err.strip().splitlines()[-1] == "dglm: error: interrupted" and "Traceback" not in err
    result = generate(tiny_bundle, *args)  # resume: a torn tail (after SIGKILL) is cut and the rest written
    assert result.returncode == 0, result.stderr
    assert len(ids(out)) == 18 and len(set(ids(out))) == 18
    assert all(line.endswith(b"\n") for line in out.read_bytes().splitlines(keepends=True))


def test_readme_documents_every_exit_code():
    """README.md's 'Errors and exit codes' table lists exactly the codes dglm uses, with errors.py's classes."""
    import re

    from dglm_cli import errors

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| `?(\d+)`? \|", section, re.MULTILINE)}
    used = {INPUT, OTHER, BUNDLE, ASSET, INTERRUPTED, 0} | {case.code for case in CASES}
    classes = {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.DGLMError)}
    assert documented == used | classes
    for name in ("InputError", "BundleError", "AssetError", "DGLM_DEBUG"):
        assert name in section
