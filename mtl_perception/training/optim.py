"""Optimizer and learning-rate schedule of a training run."""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from .config import OptimizerConfig, ScheduleConfig


def parameter_groups(model: nn.Module, loss_module: nn.Module, lr: float, weight_decay: float,
                     trunk_lr_factor: float = 1.0) -> list[dict]:
    """Weights with decay; biases, norm parameters and learned task weights without; the
    trunk's parameters at ``trunk_lr_factor * lr``. Empty groups are left out."""
    trunk = {id(p) for p in getattr(model, "trunk", nn.Module()).parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for parameter in model.parameters():
        if parameter.requires_grad:
            groups.setdefault((id(parameter) in trunk, parameter.ndim > 1), []).append(parameter)
    groups.setdefault((False, False), []).extend(p for p in loss_module.parameters() if p.requires_grad)
    return [{"params": params, "lr": lr * (trunk_lr_factor if in_trunk else 1.0),
             "weight_decay": weight_decay if decays else 0.0}
            for (in_trunk, decays), params in sorted(groups.items()) if params]


def build_optimizer(config: OptimizerConfig, model: nn.Module, loss_module: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the model and the loss module's parameters."""
    groups = parameter_groups(model, loss_module, config.lr, config.weight_decay, config.trunk_lr_factor)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))


def lr_factor(step: int, total_steps: int, config: ScheduleConfig) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up, then cosine or step decay."""
    if step < config.warmup_steps:
        alpha = step / config.warmup_steps
        return config.warmup_factor + (1.0 - config.warmup_factor) * alpha
    if config.name == "cosine":
        span = max(total_steps - config.warmup_steps, 1)
        progress = min((step - config.warmup_steps) / span, 1.0)
        return config.min_lr_factor + (1.0 - config.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    milestones = sorted(int(round(m * total_steps)) for m in config.milestones)
    return config.gamma ** bisect.bisect_right(milestones, step)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimizer step (its state dict holds no code)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
