"""Multitask node: one network, segmentation and detection from one forward pass."""

import sys

from mtl_perception.ros.inference_node import InferenceNode, run_node


class MultitaskNode(InferenceNode):
    TASKS = ("segmentation", "detection")

    def __init__(self, **kwargs) -> None:
        super().__init__("multitask_node", **kwargs)


def main(args=None) -> int:
    return run_node(MultitaskNode, args)


if __name__ == "__main__":
    sys.exit(main())
