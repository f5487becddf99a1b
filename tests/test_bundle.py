"""Bundle format: round trips, checksums, versions and clear errors."""

import json
import shutil

import pytest

from dglm_cli.bundle import FORMAT_VERSION, MANIFEST, load_bundle, write_model_card
from dglm_cli.errors import BundleError
from dglm_cli.pipeline import GenerationSettings, Pipeline

SETTINGS = GenerationSettings(num_samples=2, steps=4, max_new_tokens=6)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "copy")


def edit_manifest(path, **changes):
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_bundle_holds_no_pickles_and_lists_every_file(tiny_bundle):
    files = {str(p.relative_to(tiny_bundle)) for p in tiny_bundle.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl", ".ckpt"))]
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["files"]) == files - {MANIFEST}


def test_save_load_reproduces_generation(tiny_bundle, tiny_pipeline, tmp_path):
    """A bundle copied elsewhere and reloaded generates the same records."""
    copy = shutil.copytree(tiny_bundle, tmp_path / "elsewhere")
    reloaded = Pipeline.from_bundle(copy, "cpu")
    prompts = ["The restaurant on the corner", "Stocks fell"]
    first = [r["continuation"] for r in tiny_pipeline.generate(prompts, ["positive"], settings=SETTINGS)]
    second = [r["continuation"] for r in reloaded.generate(prompts, ["positive"], settings=SETTINGS)]
    assert first == second


def test_llama_bundle_generates(tiny_llama_bundle):
    records = list(Pipeline.from_bundle(tiny_llama_bundle, "cpu").generate(["Hello"], settings=SETTINGS))
    assert len(records) == 2 and all(isinstance(r["continuation"], str) for r in records)


def test_newer_format_is_refused(bundle_copy):
    edit_manifest(bundle_copy, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match="upgrade dglm"):
        load_bundle(bundle_copy)


def test_corrupt_file_is_detected(bundle_copy):
    weights = bundle_copy / "denoiser" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch for denoiser/model.safetensors"):
        load_bundle(bundle_copy)


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "prompt_generator" / "config.json").unlink()
    with pytest.raises(BundleError, match="missing prompt_generator/config.json"):
        load_bundle(bundle_copy)


def test_dimension_mismatch_is_one_clear_error(bundle_copy):
    config_path = bundle_copy / "classifiers" / "tiny-sentiment" / "config.json"
    config = json.loads(config_path.read_text())
    config["embedding_dim"] = 7
    config_path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match="does not match its config"):
        load_bundle(bundle_copy, verify=False)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a dglm bundle"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "nothing-here")


def test_a_new_model_card_keeps_the_bundle_verifiable(bundle_copy):
    write_model_card(bundle_copy, "# evaluated\n")
    load_bundle(bundle_copy)  # checksums verified
    assert (bundle_copy / "README.md").read_text() == "# evaluated\n"
    assert not list(bundle_copy.glob("*.tmp"))
