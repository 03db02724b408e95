"""L2C router learning: `train(...)` the logits of a frozen model; store and find the artifacts.

Modules: runners (record / blend branch runners), pairs (full step -> cache step per family),
objective (one iteration's loss), data (resumable batch streams), trainer (loop, checkpoints,
data parallel), store (artifact naming and lookup), job (the Hydra-config glue).
"""

from .objective import iteration_loss
from .pairs import make_pairs
from .trainer import Recipe, TrainState, initial_logits, train

__all__ = ["Recipe", "TrainState", "initial_logits", "iteration_loss", "make_pairs", "train"]
