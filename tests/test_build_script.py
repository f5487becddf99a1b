"""scripts/build_default_bundle.py: the distill stage keeps the LM-state cache inside its time share; a rerun keeps the card."""

import importlib.util
import json
from pathlib import Path

import pytest

from dglm_cli import runs
from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder
from dglm_cli.tiny import SENTENCES, tiny_lm

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_default_bundle.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_default_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_decoder(monkeypatch):
    model, tokenizer = tiny_lm("llama")
    decoder = SoftPromptDecoder(model, tokenizer, DecoderConfig({"kind": "path", "path": "tiny"}, model.config.hidden_size))
    monkeypatch.setattr(runs, "load_training_decoder", lambda reference: decoder)
    return decoder


def distill(build, tmp_path: Path, minutes: float, batch_size: int = 4) -> list[dict]:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "vader_train.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES), encoding="utf-8")
    build.stage_distill(tmp_path, minutes, 0, "fp32", batch_size)
    assert (tmp_path / "data" / "distilled.done").exists()
    return [json.loads(line) for line in (tmp_path / "data" / "distilled.jsonl").read_text(encoding="utf-8").splitlines()]


def test_caching_time_is_timed_per_row(build, tiny_decoder):
    rows = [("The train was", "positive", build.MOODS["positive"][0]), ("I loved every", "negative", build.MOODS["negative"][1])]
    seconds = build.caching_seconds_per_pair(tiny_decoder, rows, [" late again today", ""])  # an empty continuation is not cached
    assert 0 < seconds < 10


def test_distill_writes_every_row_when_its_share_allows(build, tiny_decoder, tmp_path):
    rows = distill(build, tmp_path, minutes=60)
    assert len(rows) == 2 * len(SENTENCES)  # every prefix in both moods
    assert {row["mood"] for row in rows} == set(build.MOODS)


def test_distill_stops_where_caching_what_it_wrote_would_pass_its_share(build, tiny_decoder, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "caching_seconds_per_pair", lambda *args: 60.0)  # a minute per row: 4 rows fill the share
    rows = distill(build, tmp_path, minutes=4.5, batch_size=4)
    assert len(rows) == 4  # the first batch; the second would bring the cache to 8 minutes


def test_measuring_stages_are_counted_in_probe_units(build):
    neutral = len(build.NEUTRAL_PROMPTS.read_text(encoding="utf-8").splitlines())
    units = 1 + 2 * len(build.STRENGTHS) + 2 * (len(build.GUIDANCE_SCALES) - 1) + 3 * 4 * neutral / (2 * build.STRENGTH_PROMPTS)
    assert build.measuring_units(4) == units


def test_distill_takes_what_the_budget_leaves(build, tmp_path):
    (tmp_path / "timings.json").write_text(json.dumps({"data": 1.0, "classifiers": 2.0, "probe": 1.0}), encoding="utf-8")
    unit_seconds = 60.0
    left = build.distill_minutes(tmp_path, 100, {"diffusion": 0.1}, unit_seconds, 4)
    assert left == pytest.approx(100 * (1 - 0.1 - build.MARGIN) - 4.0 - build.measuring_units(4))
    (tmp_path / "timings.json").write_text(json.dumps({"data": 1.0, "classifiers": 2.0, "probe": 1.0, "distill": 10.0}), encoding="utf-8")
    assert build.distill_minutes(tmp_path, 100, {"diffusion": 0.1}, unit_seconds, 4) == pytest.approx(left - 10.0)  # a resumed sitting


def test_a_rerun_does_not_wrap_the_finished_card_again(build, tmp_path):
    bundle = tmp_path / "default"
    bundle.mkdir()
    (bundle / "README.md").write_text("# exported\n\n## diffusion\n\n- steps: 7\n", encoding="utf-8")
    first = build.trained_card(tmp_path, bundle)
    assert first == "\n## diffusion\n\n- steps: 7\n"
    (bundle / "README.md").write_text("# dglm default bundle\n\nintro\n" + first + "\n## Evaluation\n", encoding="utf-8")  # the build's card
    assert build.trained_card(tmp_path, bundle) == first
