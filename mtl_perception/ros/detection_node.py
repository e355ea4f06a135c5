"""Single-task detection node (the naive baseline's second half)."""

import sys

from mtl_perception.ros.inference_node import InferenceNode, run_node


class DetectionNode(InferenceNode):
    TASKS = ("detection",)

    def __init__(self, **kwargs) -> None:
        super().__init__("detection_node", **kwargs)


def main(args=None) -> int:
    return run_node(DetectionNode, args)


if __name__ == "__main__":
    sys.exit(main())
