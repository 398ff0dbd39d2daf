"""Stages 04–05: LoRA training with the distrust objective, checkpoints that resume bit for bit, memory watch and guard."""

from yourai.train.callbacks import Control, TrainingAbort, TrainingCallback
from yourai.train.guard import MemoryAbort, MemoryCallback
from yourai.train.loop import NonFiniteAbort, Trainer, TrainResult, train
from yourai.stopping import StopAborted
from yourai.train.signals import TrainingStopped

__all__ = ["Control", "MemoryAbort", "MemoryCallback", "NonFiniteAbort", "StopAborted", "TrainResult", "Trainer",
           "TrainingAbort", "TrainingCallback", "TrainingStopped", "train"]
