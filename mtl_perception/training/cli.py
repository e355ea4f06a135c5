"""``mtl-train``: train a multitask or single-task model from a YAML config.

Examples::

    mtl-train --config config/train/demo_aerial.yaml --output runs/demo_multitask
    mtl-train --config config/train/demo_aerial.yaml --set task=segmentation --output runs/demo_seg
    mtl-train --config config/train/demo_aerial.yaml --output runs/demo_multitask --resume
    torchrun --nproc_per_node 2 -m mtl_perception.training --config ... --output ...
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from ..exit_codes import EXIT_BAD_INPUT, EXIT_OK
from .config import ConfigError, load_config
from .distributed import context_from_env, shutdown_distributed
from .state import TrainingStateError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="training config YAML (config/train/*.yaml)")
    parser.add_argument("--output", type=Path, default=None,
                        help="run folder (default runs/<config name>[-<task>])")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/state.pt if it exists")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (YAML), e.g. --set task=detection --set train.max_steps=50")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def default_output_dir(config_path: Path, task: str) -> Path:
    name = config_path.stem if task == "multitask" else f"{config_path.stem}-{task}"
    return Path("runs") / name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    context = context_from_env()
    logging.basicConfig(level=args.log_level if context.is_main else "WARNING",
                        format=f"%(asctime)s [rank {context.rank}] %(levelname)s %(name)s: %(message)s")
    command = shlex.join(["mtl-train", *(sys.argv[1:] if argv is None else argv)])
    try:
        config = load_config(args.config, args.overrides)
        output = args.output or default_output_dir(args.config, config.task)
        from .trainer import Trainer

        trainer = Trainer(config, output, command=command, context=context)
        summary = trainer.fit(resume=args.resume)
    except (ConfigError, TrainingStateError, FileNotFoundError) as exc:
        print(f"mtl-train: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        shutdown_distributed()
    if context.is_main:
        print(json.dumps({"output_dir": summary["output_dir"], "steps": summary["steps"],
                          "best": summary["best"], "wall_time_s": round(summary["wall_time_s"], 1)}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
