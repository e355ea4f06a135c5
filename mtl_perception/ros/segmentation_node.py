"""Single-task segmentation node (the naive baseline's first half)."""

import sys

from mtl_perception.ros.inference_node import InferenceNode, run_node


class SegmentationNode(InferenceNode):
    TASKS = ("segmentation",)

    def __init__(self, **kwargs) -> None:
        super().__init__("segmentation_node", **kwargs)


def main(args=None) -> int:
    return run_node(SegmentationNode, args)


if __name__ == "__main__":
    sys.exit(main())
