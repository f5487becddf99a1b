"""Attribute names from the command line (`positive`, `sentiment:positive:2`) resolved to guidance targets.

Parsing needs no torch (the CLI checks --attr before any model loads); resolving imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dglm_cli.errors import InputError
from dglm_cli.validation import weighted_name

if TYPE_CHECKING:
    from dglm_cli.classifier import LinearClassifier
    from dglm_cli.guidance import AttributeTarget


@dataclass(frozen=True)
class AttributeSpec:
    """`[CLASSIFIER:]LABEL[:WEIGHT]` as written by the user; `avoid` for --avoid."""

    label: str
    classifier: str | None = None
    weight: float = 1.0
    avoid: bool = False

    @property
    def written(self) -> str:
        return f"{self.classifier}:{self.label}" if self.classifier else self.label

    @classmethod
    def parse(cls, text: str, avoid: bool = False) -> AttributeSpec:
        parts, weight = weighted_name(text)  # the weight: finite, positive, in range (dglm_cli.validation)
        if not 1 <= len(parts) <= 2 or not all(p.strip() for p in parts):
            raise InputError(f"cannot parse attribute {text!r}: expected LABEL, LABEL:WEIGHT or CLASSIFIER:LABEL[:WEIGHT]")
        classifier, label = (None, parts[0]) if len(parts) == 1 else parts
        return cls(label=label, classifier=classifier, weight=weight, avoid=avoid)


def resolve(
    spec: AttributeSpec,
    classifiers: Mapping[str, LinearClassifier],
    refused: Mapping[str, tuple[Sequence[str], str]] = {},
) -> AttributeTarget:
    """Find the (classifier, label) a spec names; unknown or ambiguous names list the choices.

    `refused` holds classifiers that cannot be used (name -> (labels, reason)); a spec that only
    they would answer fails with their reason.
    """
    from dglm_cli.guidance import AttributeTarget

    matches = [
        (name, c) for name, c in classifiers.items()
        if spec.label in c.labels and spec.classifier in (None, name)
    ]
    if len(matches) == 1:
        name, classifier = matches[0]
        return AttributeTarget(name, classifier, spec.label, spec.weight, spec.avoid, spec.written)
    choices = ", ".join(f"{name}:{label}" for name, c in classifiers.items() for label in c.labels) or "none"
    written = spec.written
    if matches:
        names = ", ".join(f"{name}:{spec.label}" for name, _ in matches)
        raise InputError(f"attribute {written!r} is ambiguous: say which of {names}")
    reasons = [reason for name, (labels, reason) in refused.items() if spec.label in labels and spec.classifier in (None, name)]
    if reasons:
        raise InputError(f"attribute {written!r}: {reasons[0]}")
    raise InputError(f"unknown attribute {written!r}; available: {choices}")

