"""Shared fixtures: tiny randomly initialised models and bundles, built once per session, no network."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own DGLM_HOME, so nothing touches the developer's cache."""
    monkeypatch.setenv("DGLM_HOME", str(tmp_path_factory.mktemp("dglm_home")))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Path of a tiny GPT-2 bundle (read-only: copy it before modifying)."""
    from dglm_cli.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-gpt2", "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_bundle(tmp_path_factory):
    from dglm_cli.tiny import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_bundle):
    from dglm_cli.pipeline import Pipeline

    return Pipeline.from_bundle(tiny_bundle, "cpu")


@pytest.fixture(scope="session")
def tiny_encoder():
    """A tiny sentence-transformers encoder (SentenceEncoder wrapper) with 32-d unit-norm embeddings."""
    from dglm_cli.encoder import EncoderConfig, SentenceEncoder
    from dglm_cli.tiny import ENCODER_DIM, tiny_sentence_encoder

    return SentenceEncoder(tiny_sentence_encoder(), EncoderConfig({"kind": "path", "path": "tiny"}, ENCODER_DIM))


@pytest.fixture
def cuda_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return "cuda"
