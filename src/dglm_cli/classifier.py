"""Linear attribute classifiers on unit-norm encoder embeddings (logistic regression exported as tensors).

Binary classifiers hold one logit row (scikit-learn's layout): p(labels[1] | e) = sigmoid(w·e + b).
Multi-class classifiers hold one row per label: p(· | e) = softmax(W e + b).
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dglm_cli.assets import EncoderRef


@dataclass
class ClassifierConfig:
    labels: list[str]
    embedding_dim: int
    encoder: dict = field(default_factory=dict)  # the encoder whose embeddings it reads, as stored: see encoder_ref
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # data fingerprint, created_at, training settings

    def __post_init__(self):
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"a classifier needs at least two distinct labels, got {self.labels}")

    @property
    def encoder_ref(self) -> EncoderRef:
        """`encoder` read as a typed reference (the stored dict keeps the bundle format unchanged)."""
        return EncoderRef.from_dict(self.encoder)


class LinearClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        rows = 1 if len(config.labels) == 2 else len(config.labels)
        self.weight = nn.Parameter(torch.zeros(rows, config.embedding_dim))
        self.bias = nn.Parameter(torch.zeros(rows))

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def log_probs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(..., D) unit-norm embeddings -> (..., C) log-probabilities over `labels`."""
        logits = embeddings @ self.weight.T + self.bias  # (..., rows)
        if self.weight.shape[0] == 1:
            return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=-1)  # (..., 2)
        return F.log_softmax(logits, dim=-1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Probabilities (..., C), the columns in the order of `labels` (= scikit-learn's predict_proba)."""
        return self.log_probs(embeddings).exp()
