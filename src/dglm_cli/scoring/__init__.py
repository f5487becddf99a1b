"""Scoring generated text: perplexity, attribute scorers, and per-group summaries. No printing here.

A small package: `reader` (JSONL records), `perplexity`, `scorers` (label scorers and the lookup of
saved classifiers), `summary` (scoring records in batches, per-group statistics). Its names are
re-exported here, so `from dglm_cli import scoring; scoring.run(...)` works as before.

Input is JSONL read one line at a time (`dglm generate` records, or any objects with a prompt and a
continuation field). Each record gets a `scores` block; a group summary (by guidance settings, or by
any field) accumulates as records stream past: memory holds the distinct n-grams and a few numbers
per record, never the records themselves.

Scorers:
- perplexity: conditional perplexity of the continuation given the prompt under a fixed causal LM,
  exp(mean NLL of the continuation's tokens). Prompt and continuation are tokenised as one string
  (the text the model would have seen); a token that covers any character of the continuation is a
  continuation token, so a merge across the boundary is scored, never dropped. The sequence starts
  with the tokenizer's BOS token (its EOS token when it has none, GPT-2's convention), so the first
  token of a continuation without a prompt is scored too. Sequences longer than the model's context
  keep their last tokens.
- vader: the VADER lexicon (vaderSentiment), label from the compound score with the thresholds its
  authors recommend (>= 0.05 positive, <= -0.05 negative, else neutral).
- clf:NAME: a saved dglm classifier on the embedding of its own encoder.
- hf:PATH_OR_ID: a Hugging Face sequence-classification model (softmax over its labels).
Label scorers judge the continuation alone, as the guidance does (it steers the continuation's embedding).
"""

from dglm_cli.scoring.perplexity import (
    DEFAULT_PPL_MODEL,
    PerplexityScorer,
    joint_tokens,
    load_perplexity_scorer,
    ppl_reference,
    weights_fingerprint,
)
from dglm_cli.scoring.reader import PROMPT_FIELD, TEXT_FIELD, Item, RecordReader, get_field
from dglm_cli.scoring.scorers import (
    VADER_THRESHOLD,
    ClassifierScorer,
    EncoderCache,
    HFScorer,
    LabelScorer,
    VaderScorer,
    bundle_classifier_scorers,
    classifier_dir,
    classifier_encoder,
    load_classifier_scorer,
    load_hf_scorer,
)
from dglm_cli.scoring.summary import (
    DEFINITIONS,
    DISTINCT_NS,
    EMPTY,
    MAX_DISAGREEMENT,
    Evaluation,
    GroupStats,
    Scoring,
    guidance_label,
    guided_attributes,
    matching_label,
    run,
    score_items,
)

__all__ = [
    "TEXT_FIELD", "PROMPT_FIELD", "Item", "get_field", "RecordReader", "DEFAULT_PPL_MODEL", "joint_tokens", "PerplexityScorer",
    "ppl_reference", "load_perplexity_scorer", "weights_fingerprint", "VADER_THRESHOLD", "LabelScorer", "VaderScorer",
    "ClassifierScorer", "HFScorer", "load_hf_scorer", "classifier_dir", "classifier_encoder", "EncoderCache",
    "load_classifier_scorer", "bundle_classifier_scorers", "MAX_DISAGREEMENT", "DISTINCT_NS", "EMPTY", "Scoring", "guided_attributes",
    "matching_label", "score_items", "guidance_label", "GroupStats", "Evaluation", "DEFINITIONS", "run"
]
