"""Training: YAML config, interleaved multitask/single-task training, evaluation, resume, DDP.

Plain PyTorch (no ROS). Entry point: ``mtl-train`` (:mod:`.cli`); the loop is
:class:`Trainer`; the real-data learning report is :mod:`.learn_report`.
"""

from .config import ConfigError, TrainConfig, apply_overrides, config_from_dict, load_config
from .engine import TrainingModule, evaluate, train_step
from .state import TrainingStateError, load_training_state, save_training_state

__all__ = [
    "ConfigError", "TrainConfig", "Trainer", "TrainingModule", "TrainingStateError", "apply_overrides",
    "config_from_dict", "evaluate", "load_config", "load_training_state", "save_training_state", "train_step",
]


def __getattr__(name):
    # The trainer pulls in tensorboard and the datasets: import it on first use.
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(name)
