"""Benchmark `dglm train-classifier` on the VADER movie-review snippets with the default encoder.

Downloads the VADER ground truth once (pip, sha256-checked, cached under DGLM_HOME/data), labels each
snippet positive (valence > 0) or negative (< 0), drops the neutral ones, writes a CSV, and runs the
real command twice in a fresh DGLM_HOME: with a cold embedding cache, then with a warm one. Prints the
held-out accuracy and both wall times (each includes starting Python and importing the libraries).

    python benchmarks/train_classifier.py [--rows N] [--seed S]
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dglm_cli.datasets import vader_ground_truth


def write_movie_csv(path: Path, rows: int | None, seed: int = 0) -> int:
    """The non-neutral snippets, shuffled (the file lists the positive ones first), at most `rows` of them."""
    snippets = [r for r in vader_ground_truth(["movie"]) if r.valence != 0]
    random.Random(seed).shuffle(snippets)
    snippets = snippets[:rows]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((r.text, "positive" if r.valence > 0 else "negative") for r in snippets)
    return len(snippets)


def train(csv_path: Path, home: Path, seed: int) -> tuple[dict, float]:
    command = [sys.executable, "-m", "dglm_cli", "train-classifier", str(csv_path), "--name", "vader-movie",
               "--seed", str(seed), "--device", "cpu", "--force", "--json", "--quiet"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DGLM_HOME": str(home)})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"train-classifier failed: {result.stderr.strip()}")
    return json.loads(result.stdout), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="use N randomly chosen labeled snippets (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "vader_movie.csv"
        n = write_movie_csv(csv_path, args.rows, args.seed)
        home = Path(tmp) / "home"  # a fresh DGLM_HOME: empty embedding cache
        cold, cold_s = train(csv_path, home, args.seed)
        warm, warm_s = train(csv_path, home, args.seed)
    m = warm["metrics"]
    print(f"rows                 {n} ({cold['rows']['train']} train, {cold['rows']['test']} held out)")
    print(f"encoder              {cold['encoder']}, C={cold['C']:g} (chosen on validation)")
    print(f"held-out accuracy    {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ROC-AUC {m['roc_auc']:.4f}")
    print(f"cold cache           {cold_s:6.1f} s wall ({cold['encoded']} texts encoded)")
    print(f"warm cache           {warm_s:6.1f} s wall ({warm['encoded']} texts encoded)")
    print(f"cpu threads          {os.cpu_count()}")


if __name__ == "__main__":
    main()
