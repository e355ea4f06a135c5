"""The training loop: data, model, optimisation, evaluation, checkpoints and resume.

Run folder layout (rank 0 writes it):

* ``config.yaml``: the resolved config; ``state.pt``: training state for ``--resume``;
* ``best.pt`` / ``last.pt``: deployable model checkpoints (``Predictor`` loads them);
* ``metrics.jsonl``: one line per evaluation; ``summary.json``: the run's outcome;
* ``tensorboard/``: losses, learning rate, task weights and metrics.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from ..checkpoint import make_checkpoint, save_checkpoint
from ..data.collate import collate_batch
from ..data.sampler import InterleavedBatchSampler
from ..losses import MultitaskLoss
from ..metrics import json_safe
from ..models.nets import build_model
from ..postprocess import DetectionParams
from .config import ConfigError, TrainConfig, config_from_dict
from .data import SeededBatchSampler, SeededDataset, build_training_data, collate_eval, seed_worker
from .distributed import (DistContext, barrier, broadcast_buffers, context_from_env, init_distributed,
                          mean_across_ranks)
from .engine import TrainingModule, evaluate, move_targets, train_step
from .optim import build_optimizer, build_scheduler
from .state import capture_rng_state, load_training_state, restore_rng_state, save_training_state
from .teachers import Teachers

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
# Keys that may change between a run and its resumption without changing the result.
RESUME_MUTABLE_KEYS = {"train.workers", "train.threads", "train.progress", "train.log_every_steps", "train.checkpoint_every_steps"}
StepCallback = Callable[["Trainer", int, torch.Tensor, list], None]


def resolve_train_device(name: str, context: DistContext) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but CUDA is not available")
        return torch.device("cuda", context.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


class Trainer:
    """Trains one model as its :class:`TrainConfig` says.

    Args:
        config: the run's config.
        output_dir: run folder (created).
        command: the command line, stored in checkpoint metadata.
        context: distributed context (default: from the torchrun environment).
        step_callback: called after every step as ``callback(trainer, step, images, targets)``.
    """

    def __init__(self, config: TrainConfig, output_dir: str | Path, command: str | None = None,
                 context: DistContext | None = None, step_callback: StepCallback | None = None):
        self.config = config
        self.output_dir = Path(output_dir)
        self.command = command or ""
        self.context = context or context_from_env()
        self.step_callback = step_callback
        self.device = resolve_train_device(config.train.device, self.context)
        self.amp = config.train.amp if self.device.type == "cuda" else "none"
        if config.train.amp != "none" and self.amp == "none":
            log.warning("train.amp=%s needs CUDA: training in fp32 on the CPU", config.train.amp)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        init_distributed(self.context, self.device)
        seed_everything(config.train.seed)
        if config.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        self.data = build_training_data(config)
        self.class_names = self.data.class_names
        self.model_config = config.model_config(self.class_names)
        class_weights = config.loss.seg_class_weights
        if class_weights is not None and self.model_config.has_segmentation \
                and len(class_weights) != self.model_config.num_seg_classes:
            raise ConfigError(f"loss.seg_class_weights has {len(class_weights)} entries but the model has "
                              f"{self.model_config.num_seg_classes} segmentation classes {self.class_names['segmentation']}")
        self.model = build_model(self.model_config, config.trunk_weights).to(self.device)
        negative_classes = self._negative_classes(config)
        self.loss = MultitaskLoss(self.model_config.tasks, weights=config.loss.weights,
                                  learned_weights=config.loss.learned_weights, box_loss=config.loss.box_loss,
                                  neg_pos_ratio=config.loss.neg_pos_ratio,
                                  seg_class_weights=config.loss.seg_class_weights,
                                  negative_iou=config.loss.negative_iou,
                                  det_negative_seg_classes=negative_classes).to(self.device)
        self.teachers = Teachers(config.distill, self.class_names, tuple(self.model_config.input_size), self.device,
                                 negative_classes) if config.distill.enabled else None
        self.student_seconds = 0.0  # time in the student's training steps (teachers apart)
        self.module = TrainingModule(self.model, self.loss).to(self.device)
        self.wrapped: torch.nn.Module = self.module
        if self.context.enabled:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.parameters = [p for p in self.module.parameters() if p.requires_grad]

        self.sampler = InterleavedBatchSampler(
            [len(d) for d in self.data.train_dataset.datasets], self.data.samples_per_source,
            seed=config.train.seed, rank=self.context.rank, world_size=self.context.world_size,
            drop_last=config.data.drop_last)
        self.steps_per_epoch = len(self.sampler)
        if config.train.max_steps is not None:
            self.total_steps = config.train.max_steps
        else:
            self.total_steps = config.train.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(config.optimizer, self.model, self.loss)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, config.schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.detection_params = DetectionParams(score_threshold=config.eval.score_threshold,
                                                nms_iou=config.eval.nms_iou,
                                                max_detections=config.eval.max_detections,
                                                pre_nms_top_k=max(1000, config.eval.max_detections))
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.best: dict[str, Any] = {"metric": config.eval.best_metric, "value": None, "step": None}
        self.history: list[dict[str, Any]] = []
        self.last_metrics: dict[str, Any] = {}
        self.last_eval_step: int | None = None  # on every rank (rank 0 alone fills history)
        self._writer = None

    # -- state -----------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue exactly here."""
        self.sampler.set_epoch(self.epoch)
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(batches_done=self.batches_done),
            "rng": capture_rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "best": json_safe(self.best),
            "history": json_safe(self.history),
            "last_eval_step": self.last_eval_step,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the configs must match, see RESUME_MUTABLE_KEYS)."""
        saved = _flatten(config_from_dict(state["config"]).to_dict())
        current = _flatten(self.config.to_dict())
        differing = sorted(k for k in set(saved) | set(current)
                           if saved.get(k) != current.get(k) and k not in RESUME_MUTABLE_KEYS)
        if differing:
            raise ConfigError(f"{self.state_path}: the config differs from the resumed run's in "
                              + ", ".join(f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in differing[:5]))
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["grad_scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.batches_done = int(state["sampler"]["batches_done"])
        self.best = dict(state["best"])
        self.history = list(state["history"])
        self.last_eval_step = state["last_eval_step"]
        self.last_metrics = self.history[-1]["metrics"] if self.history else {}
        restore_rng_state(state["rng"])

    def save_state(self) -> None:
        if self.context.is_main:
            save_training_state(self.state_path, self.state_dict())
            log.debug("saved training state at step %d", self.step)

    # -- loaders ---------------------------------------------------------------------------------

    def train_loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.train.seed)
        workers = self.config.train.workers
        return DataLoader(SeededDataset(self.data.train_dataset), batch_sampler=SeededBatchSampler(self.sampler),
                          collate_fn=collate_batch, num_workers=workers, worker_init_fn=seed_worker,
                          generator=generator, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def _negative_classes(self, config: TrainConfig) -> list[int] | None:
        """Indices of ``loss.det_negative_seg_classes`` in the model's segmentation classes
        (None unless a multitask run names some)."""
        names = config.loss.det_negative_seg_classes
        if not names:
            return None
        if self.model_config.kind != "multitask":
            log.info("loss.det_negative_seg_classes needs segmentation labels in a multitask run: unused by this %s run",
                     self.model_config.kind)
            return None
        known = list(self.class_names["segmentation"])
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"loss.det_negative_seg_classes: {unknown} are not segmentation classes {known}")
        return [known.index(n) for n in names]

    def evaluate(self) -> dict[str, Any]:
        """Metrics of the current model on the validation sources (every rank may call it)."""
        batch_size = self.config.eval.batch_size
        generator = torch.Generator().manual_seed(0)

        def batches():
            for dataset in self.data.val_datasets:
                yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_eval,
                                      num_workers=0, generator=generator)

        return evaluate(self.model, batches(), self.class_names, self.device, self.detection_params, self.amp)

    # -- outputs ---------------------------------------------------------------------------------

    @property
    def writer(self):
        if self._writer is None and self.context.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.step or None)
        return self._writer

    def checkpoint_metadata(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": f"{self.model_config.kind}-{self.model_config.trunk}",
            "command": self.command,
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "metrics": json_safe(metrics),
            "train_sources": list(self.data.train_names),
            "val_sources": list(self.data.val_names),
        }

    def save_model(self, name: str, metrics: dict[str, Any]) -> Path:
        dtype = torch.float16 if self.config.train.checkpoint_dtype == "float16" else torch.float32
        checkpoint = make_checkpoint(self.model, self.class_names, self.checkpoint_metadata(metrics))
        return save_checkpoint(checkpoint, self.output_dir / name, weights_dtype=dtype)

    def _log_scalars(self, prefix: str, values: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in _flatten(values).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, self.step)

    def _after_evaluation(self, metrics: dict[str, Any]) -> None:
        """Rank 0: log, keep the best and last checkpoints."""
        self.last_metrics = metrics
        record = {"step": self.step, "epoch": self.epoch, "metrics": json_safe(metrics)}
        self.history.append(record)
        with open(self.output_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._log_scalars("val", metrics)
        summary = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("seg_miou", "det_voc_ap50", "det_coco_map", "score")
                            if isinstance(metrics.get(k), float))
        log.info("eval at step %d (epoch %d): %s", self.step, self.epoch, summary)
        self.save_model("last.pt", metrics)
        value = metrics.get(self.best["metric"])
        if value is None:
            raise ConfigError(f"eval.best_metric {self.best['metric']!r} is not an evaluation metric; "
                              f"choose from {sorted(k for k, v in metrics.items() if isinstance(v, float))}")
        if isinstance(value, float) and not math.isnan(value) and (self.best["value"] is None or value > self.best["value"]):
            self.best.update(value=value, step=self.step)
            self.save_model("best.pt", metrics)

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``total_steps``, evaluating and checkpointing on the way.

        Args:
            resume: continue from ``output_dir/state.pt`` when it exists.
        Returns:
            The summary also written to ``summary.json``.
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.state_path.is_file():
            self.load_state_dict(load_training_state(self.state_path))
            log.info("resumed from %s at step %d (epoch %d, batch %d)", self.state_path, self.step, self.epoch,
                     self.batches_done)
        elif resume:
            log.warning("--resume: no %s yet, starting from scratch", self.state_path)
        if self.context.is_main:
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        start_time = time.perf_counter()
        start_step = self.step
        cfg = self.config.train
        progress = None
        if self.context.is_main and cfg.progress:
            from tqdm import tqdm

            progress = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.model_config.kind}",
                            unit="step", dynamic_ncols=True)
        running: dict[str, list[float]] = {}
        loader = self.train_loader()
        self.train_mode()
        try:
            while self.step < self.total_steps:
                self.sampler.set_epoch(self.epoch)
                for images, targets in loader:
                    images = images.to(self.device, non_blocking=True)
                    targets = move_targets(targets, self.device)
                    soft = None
                    if self.teachers:
                        targets, soft = self.teachers.label(images, targets)
                    step_start = time.perf_counter()
                    losses = train_step(self.wrapped, images, targets, self.optimizer, self.scaler, self.parameters,
                                        self.amp, cfg.grad_clip, soft)
                    self.student_seconds += time.perf_counter() - step_start
                    self.scheduler.step()
                    self.step += 1
                    self.batches_done += 1
                    for key, value in losses.items():
                        running.setdefault(key, []).append(value)
                    if self.step_callback is not None:
                        self.step_callback(self, self.step, images, targets)
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{losses['loss']:.3f}")
                    if self.step % cfg.log_every_steps == 0 or self.step == self.total_steps:
                        self._log_training(running)
                        running = {}
                    if self.step % cfg.checkpoint_every_steps == 0:
                        self.save_state()
                    if self.step >= self.total_steps:
                        break
                if self.batches_done >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batches_done = 0
                    every = cfg.eval_every_epochs
                    if every and self.epoch % every == 0 and self.step < self.total_steps:
                        self._evaluate_and_save()
        finally:
            if progress is not None:
                progress.close()
        if self.last_eval_step != self.step:
            self._evaluate_and_save()
        broadcast_buffers(self.model, self.context)
        summary = {
            "output_dir": str(self.output_dir),
            "task": self.config.task,
            "steps": self.step,
            "epochs": self.epoch + self.batches_done / self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "wall_time_s": time.perf_counter() - start_time,
            "steps_this_session": self.step - start_step,
            "best": self.best,
            "student_step_s": self.student_seconds,
            "teacher_s": self.teachers.seconds if self.teachers else 0.0,
            "teachers": dict(self.config.distill.teachers),
            "final_metrics": self.last_metrics,
            "class_names": self.class_names,
        }
        if self.context.is_main:
            (self.output_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return summary

    def train_mode(self) -> None:
        """Training mode, with BatchNorm layers in eval mode as ``train.freeze_bn`` says."""
        self.module.train()
        frozen = {"none": None, "trunk": self.model.trunk, "all": self.model}[self.config.train.freeze_bn]
        if frozen is not None:
            for layer in frozen.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.eval()

    def _evaluate_and_save(self) -> None:
        self.last_eval_step = self.step
        if self.context.is_main:
            metrics = self.evaluate() if self.data.val_datasets else {}
            self.train_mode()
            if metrics:
                self._after_evaluation(metrics)
            else:
                self.last_metrics = {}
                self.history.append({"step": self.step, "epoch": self.epoch, "metrics": {}})
                self.save_model("last.pt", {})
        self.save_state()
        barrier(self.context)

    def _log_training(self, running: dict[str, list[float]]) -> None:
        means = {k: float(np.nanmean(v)) if not all(math.isnan(x) for x in v) else math.nan
                 for k, v in running.items()}
        means = mean_across_ranks(means, self.context, self.device)
        if not self.context.is_main:
            return
        lr = max(group["lr"] for group in self.optimizer.param_groups)  # the branches' lr
        weights = self.loss.task_weights()
        self._log_scalars("train", {**means, "lr": lr, **{f"weight_{k}": v for k, v in weights.items()}})
        parts = " ".join(f"{k} {means[k]:.4f}" for k in ("loss", "loss_seg", "loss_box", "loss_cls", "loss_soft_seg",
                                                          "loss_soft_cls", "loss_soft_box") if k in means)
        timing = (f" (time so far: student steps {self.student_seconds:.0f} s, teachers {self.teachers.seconds:.0f} s)"
                  if self.teachers else "")
        log.info("step %d/%d epoch %d %s lr %.3g%s", self.step, self.total_steps, self.epoch, parts, lr, timing)
