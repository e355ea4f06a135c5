"""Training configuration: YAML mapped onto dataclasses, with dotted ``key=value`` overrides.

Top-level sections (see ``config/train/demo_aerial.yaml`` for a commented example)::

    task: multitask            # multitask | segmentation | detection (single-task baselines)
    model: {...}               # ModelConfig fields; tasks and class counts come from the data
    trunk_weights: imagenet    # null | imagenet | path to a torchvision state dict
    data: {train: [...], val: [...]}
    augmentation: {...}        # AugmentationConfig fields (input_size defaults to the model's)
    optimizer: {...}
    schedule: {...}
    loss: {...}
    distill: {...}             # DistillConfig: single-task teachers for the missing task (off by default)
    train: {...}
    eval: {...}

Unknown keys anywhere are errors that name the key. ``base: other.yaml`` starts a file from
another one (relative path): mappings merge key by key, lists and values replace.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..data.transforms import AugmentationConfig
from ..models.config import TASKS, ModelConfig

TASK_CHOICES = ("multitask", *TASKS)
# ModelConfig fields derived from the task and the datasets' class maps, never set by hand.
DERIVED_MODEL_FIELDS = ("tasks", "num_seg_classes", "num_det_classes")


class ConfigError(ValueError):
    """A training config is invalid; the message names the file and key."""


@dataclass
class TrainSource:
    """One training source: a ``build_dataset`` mapping and its share of every batch."""

    dataset: dict[str, Any]
    per_batch: int = 1  # samples of this source in every batch (per process)


@dataclass
class DataConfig:
    """Training sources (interleaved in every batch) and validation sources."""

    train: list[TrainSource] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    drop_last: bool = False  # end the epoch before the longest source's incomplete batch


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 4e-5  # not applied to biases, norm layers and learned task weights
    trunk_lr_factor: float = 1.0  # the pretrained trunk's lr relative to the branches'


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | step
    warmup_steps: int = 0  # linear warm-up from warmup_factor * lr
    warmup_factor: float = 0.001
    min_lr_factor: float = 0.0  # cosine: final lr = min_lr_factor * lr
    milestones: tuple[float, ...] = (0.67, 0.89)  # step: fractions of the total steps
    gamma: float = 0.1  # step: lr factor at every milestone


@dataclass
class LossConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"segmentation": 1.0, "detection": 1.0})
    learned_weights: bool = False  # Kendall et al. 2018 homoscedastic uncertainty weights
    box_loss: str = "smooth_l1"  # smooth_l1 | giou
    neg_pos_ratio: int = 3
    seg_class_weights: list[float] | None = None  # pixel cross-entropy weight per segmentation class (null: all 1)
    negative_iou: float | None = None  # unmatched anchors with IoU in [this, 0.5) are not negatives (null: none)
    # segmentation classes whose pixels hold no detection object: in seg-only samples, anchors on them are
    # detection negatives (multitask only; e.g. [building] for a tree detector)
    det_negative_seg_classes: list[str] | None = None


DISTILL_TASKS = ("segmentation", "detection")


@dataclass
class DistillConfig:
    """Cross-task teachers (the ``distill`` section; off while ``teachers`` is empty).

    Every sample is labelled for one task; a frozen single-task teacher labels the other:

    * ``pseudo_labels[task]``: the missing task gets hard pseudo-labels: segmentation the
      teacher's argmax where its top probability is >= ``seg_min_confidence`` (else ignored);
      detection the teacher's boxes after NMS scoring >= ``det_score_threshold`` as ground truth,
      anchors mostly inside boxes scoring in [``det_ignore_score``, ``det_score_threshold``)
      ignored, and with no confident box the tile's anchors outside those boxes as negatives.
    * ``soft_weight[task]`` (> 0): the labelled task adds a soft term against its teacher at
      ``temperature[task]``: KL of the pixel class distributions; for detection KL of the
      anchor class scores plus box L1 on the teacher's confident anchors.
    """

    teachers: dict[str, str] = field(default_factory=dict)  # task -> single-task checkpoint
    pseudo_labels: dict[str, bool] = field(default_factory=lambda: {"segmentation": True, "detection": True})
    soft_weight: dict[str, float] = field(default_factory=lambda: {"segmentation": 0.0, "detection": 0.0})
    temperature: dict[str, float] = field(default_factory=lambda: {"segmentation": 2.0, "detection": 2.0})
    seg_min_confidence: float = 0.7
    det_score_threshold: float = 0.5
    det_ignore_score: float = 0.2

    @property
    def enabled(self) -> bool:
        return bool(self.teachers)


@dataclass
class RunConfig:
    """The ``train`` section."""

    epochs: int | None = None  # epochs of the interleaved sampler ...
    max_steps: int | None = None  # ... or a step budget (wins when both are set)
    grad_clip: float | None = 10.0  # max global gradient norm; null disables
    amp: str = "none"  # none | fp16 | bf16 (CUDA only; the CPU trains in fp32)
    device: str = "auto"  # auto | cuda | cpu
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    threads: int | None = None  # torch intra-op CPU threads (null: torch's default)
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn only)
    # BatchNorm layers kept in eval mode while training: none | trunk (keep the pretrained
    # statistics) | all (also the branches': no layer then depends on the batch's mix of tasks)
    freeze_bn: str = "none"
    checkpoint_every_steps: int = 100  # training-state interval for --resume
    eval_every_epochs: int = 1  # 0: only at the end
    log_every_steps: int = 10
    progress: bool = True  # tqdm bar (rank 0)
    checkpoint_dtype: str = "float32"  # float32 | float16 for best.pt / last.pt weights


@dataclass
class EvalConfig:
    best_metric: str = "score"  # a key of the evaluation metrics; score = mean(seg_miou, det_voc_ap50)
    batch_size: int = 4
    score_threshold: float = 0.01  # low, so AP sees the whole precision-recall curve
    nms_iou: float = 0.45
    max_detections: int = 200


@dataclass
class TrainConfig:
    """Everything one training run needs; :meth:`to_dict` is stored in every checkpoint."""

    task: str = "multitask"
    model: dict[str, Any] = field(default_factory=dict)
    trunk_weights: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    augmentation: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def tasks(self) -> tuple[str, ...]:
        """The model's branches for :attr:`task`."""
        return ("segmentation", "detection") if self.task == "multitask" else (self.task,)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        checks = [
            (self.task in TASK_CHOICES, "task", f"must be one of {TASK_CHOICES}"),
            (self.optimizer.name in ("sgd", "adamw"), "optimizer.name", "must be sgd or adamw"),
            (self.optimizer.lr > 0, "optimizer.lr", "must be positive"),
            (self.optimizer.trunk_lr_factor >= 0, "optimizer.trunk_lr_factor", "must be >= 0"),
            (self.schedule.name in ("cosine", "step"), "schedule.name", "must be cosine or step"),
            (self.schedule.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0"),
            (0 < self.schedule.warmup_factor <= 1, "schedule.warmup_factor", "must be in (0, 1]"),
            (all(0 < m < 1 for m in self.schedule.milestones), "schedule.milestones", "must be fractions in (0, 1)"),
            (self.loss.box_loss in ("smooth_l1", "giou"), "loss.box_loss", "must be smooth_l1 or giou"),
            (self.loss.seg_class_weights is None or (isinstance(self.loss.seg_class_weights, list)
             and all(isinstance(w, (int, float)) and w >= 0 for w in self.loss.seg_class_weights)
             and any(w > 0 for w in self.loss.seg_class_weights)),
             "loss.seg_class_weights", "must be null or a list of non-negative numbers, not all 0"),
            (self.loss.negative_iou is None or 0 < self.loss.negative_iou < 0.5, "loss.negative_iou",
             "must be null or in (0, 0.5)"),
            (set(self.loss.weights) <= {"segmentation", "detection"}, "loss.weights",
             "keys must be segmentation and/or detection"),
            (self.train.amp in ("none", "fp16", "bf16"), "train.amp", "must be none, fp16 or bf16"),
            (self.train.device in ("auto", "cuda", "cpu"), "train.device", "must be auto, cuda or cpu"),
            (self.train.epochs is not None or self.train.max_steps is not None, "train",
             "needs epochs or max_steps"),
            (self.train.epochs is None or self.train.epochs >= 1, "train.epochs", "must be >= 1"),
            (self.train.max_steps is None or self.train.max_steps >= 1, "train.max_steps", "must be >= 1"),
            (self.train.workers >= 0, "train.workers", "must be >= 0"),
            (self.train.freeze_bn in ("none", "trunk", "all"), "train.freeze_bn", "must be none, trunk or all"),
            (self.train.threads is None or self.train.threads >= 1, "train.threads", "must be >= 1 or null"),
            (self.train.checkpoint_every_steps >= 1, "train.checkpoint_every_steps", "must be >= 1"),
            (self.train.eval_every_epochs >= 0, "train.eval_every_epochs", "must be >= 0"),
            (self.train.log_every_steps >= 1, "train.log_every_steps", "must be >= 1"),
            (self.train.checkpoint_dtype in ("float32", "float16"), "train.checkpoint_dtype",
             "must be float32 or float16"),
            (self.eval.batch_size >= 1, "eval.batch_size", "must be >= 1"),
            (bool(self.data.train), "data.train", "needs at least one source"),
            *self._distill_checks(),
            (all(s.per_batch >= 1 for s in self.data.train), "data.train[].per_batch", "must be >= 1"),
        ]
        for ok, key, why in checks:
            if not ok:
                raise ConfigError(f"{key} {why}")
        for source in [s.dataset for s in self.data.train] + list(self.data.val):
            if not isinstance(source, Mapping) or "type" not in source:
                raise ConfigError(f"every data source needs a 'type', got {source!r}")
        derived = sorted(set(self.model) & set(DERIVED_MODEL_FIELDS))
        if derived:
            raise ConfigError(f"model.{derived[0]} is derived from task and the datasets' class names; remove it")
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(self.model) - model_fields)
        if unknown:
            raise ConfigError(f"unknown key model.{unknown[0]}")
        try:  # field values (trunk, resize, head_norm, ...) checked now, before any data is read
            ModelConfig(**self.model, tasks=self.tasks)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model: {exc}") from exc
        aug_fields = {f.name for f in dataclasses.fields(AugmentationConfig)}
        unknown = sorted(set(self.augmentation) - aug_fields)
        if unknown:
            raise ConfigError(f"unknown key augmentation.{unknown[0]}")
        if "resize" in self.augmentation:
            raise ConfigError("augmentation.resize follows the model; set model.resize (stretch | letterbox) instead")

    def _distill_checks(self) -> list[tuple[bool, str, str]]:
        d = self.distill
        maps = (("teachers", d.teachers), ("pseudo_labels", d.pseudo_labels), ("soft_weight", d.soft_weight),
                ("temperature", d.temperature))
        checks = [(isinstance(v, Mapping) and set(v) <= set(DISTILL_TASKS), f"distill.{k}",
                   "keys must be segmentation and/or detection") for k, v in maps]
        checks += [
            (all(isinstance(p, str) and p for p in (d.teachers or {}).values()) if isinstance(d.teachers, Mapping)
             else False, "distill.teachers", "values must be checkpoint paths"),
            (all(isinstance(w, (int, float)) and w >= 0 for w in (d.soft_weight or {}).values())
             if isinstance(d.soft_weight, Mapping) else False, "distill.soft_weight", "values must be >= 0"),
            (all(isinstance(t, (int, float)) and t > 0 for t in (d.temperature or {}).values())
             if isinstance(d.temperature, Mapping) else False, "distill.temperature", "values must be > 0"),
            (0 < d.seg_min_confidence <= 1, "distill.seg_min_confidence", "must be in (0, 1]"),
            (0 < d.det_score_threshold <= 1, "distill.det_score_threshold", "must be in (0, 1]"),
            (0 < d.det_ignore_score <= d.det_score_threshold, "distill.det_ignore_score",
             "must be in (0, det_score_threshold]"),
            (not d.teachers or all(t in self.tasks for t in d.teachers) if isinstance(d.teachers, Mapping) else False,
             "distill.teachers", f"must name tasks of the model ({', '.join(self.tasks)})"),
        ]
        return checks

    def model_config(self, class_names: Mapping[str, list[str]]) -> ModelConfig:
        """The :class:`ModelConfig` for :attr:`task` and ``class_names`` (per task)."""
        counts = {}
        if "segmentation" in self.tasks:
            counts["num_seg_classes"] = len(class_names["segmentation"])
        if "detection" in self.tasks:
            counts["num_det_classes"] = len(class_names["detection"])
        try:
            return ModelConfig(**self.model, tasks=self.tasks, **counts)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model: {exc}") from exc

    def augmentation_config(self) -> AugmentationConfig:
        """:class:`AugmentationConfig`; its ``input_size`` defaults to the model's, its ``resize`` is the model's."""
        values = dict(self.augmentation)
        values.setdefault("input_size", self.model.get("input_size", ModelConfig.input_size))
        values["resize"] = self.model.get("resize", ModelConfig.resize)
        try:
            return AugmentationConfig(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"augmentation: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and scalars (YAML/JSON and ``weights_only`` safe)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


_SECTIONS = {
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "loss": LossConfig,
    "distill": DistillConfig,
    "train": RunConfig,
    "eval": EvalConfig,
}


def _build_section(cls: type, values: Any, where: str) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
    values = dict(values)
    if cls is DataConfig:
        sources = values.get("train") or []
        if not isinstance(sources, list):
            raise ConfigError("data.train must be a list of {dataset, per_batch} entries")
        values["train"] = [_build_section(TrainSource, s, f"data.train[{i}]") for i, s in enumerate(sources)]
        values["val"] = list(values.get("val") or [])
    for name in ("betas", "milestones"):
        if name in values and isinstance(values[name], list):
            values[name] = tuple(values[name])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a parsed YAML mapping (unknown keys are errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            values[key] = _build_section(_SECTIONS[key], value, key)
        elif key in ("model", "augmentation"):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a mapping")
            values[key] = dict(value or {})
        else:
            values[key] = value
    return TrainConfig(**values)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping.

    List entries are addressed by index: ``data.train.0.per_batch=3``.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key")
        value = yaml.safe_load(raw) if raw.strip() else None
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                node = node[_list_index(part, node, where)]
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {item!r}: {where} is not a mapping or list")
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(last, node, key)] = value
        else:
            node[last] = value
    return data


def _list_index(part: str, node: list, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override: {where} needs an index below {len(node)}, got {part!r}")
    return int(part)


BASE_KEY = "base"  # a config may start from another file: base: voc_multitask.yaml (relative to it)


def _merged(base: Any, changes: Any) -> Any:
    """``changes`` laid over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, Mapping) and isinstance(changes, Mapping):
        out = dict(base)
        for key, value in changes.items():
            out[key] = _merged(base[key], value) if key in base else value
        return out
    return changes


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML training config, with its ``base`` chain merged in.

    Raises:
        ConfigError: missing or invalid file, or a ``base`` cycle (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: training config not found")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' configs form a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a training config must be a mapping, got {type(data).__name__}")
    data = dict(data)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name, got {base!r}")
    return _merged(read_config_file(path.parent / base, (*_seen, path.resolve())), data)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config (and its ``base`` chain) and apply ``key=value`` overrides.

    Raises:
        ConfigError: unreadable file, unknown key or invalid value (the message names the file).
    """
    data = read_config_file(path)
    try:
        return config_from_dict(apply_overrides(data, overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
