"""Stages 04–05: LoRA training with the distrust objective, checkpoints that resume bit for bit, memory watch and guard."""

from yourai.train.callbacks import Control, TrainingAbort, TrainingCallback
from yourai.train.guard import MemoryAbort, MemoryCallback
from yourai.train.loop import NonFiniteAbort, Trainer, TrainResult, train

__all__ = ["Control", "MemoryAbort", "MemoryCallback", "NonFiniteAbort", "TrainResult", "Trainer", "TrainingAbort",
           "TrainingCallback", "train"]
