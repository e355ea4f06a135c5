"""pip install of the ROS-free core: ``pip install .`` (no ROS needed).

ROS users build this repository with colcon instead (package.xml declares
ament_cmake, so colcon never runs this file). Both installs produce the same
``mtl_perception`` Python package; only the colcon one adds the generated
``mtl_perception.msg`` interface module.
"""

import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

REPO_ROOT = Path(__file__).resolve().parent

# Interface definitions shipped as package data so ROS-free code (rosbags) can
# register them; CMakeLists.txt installs the same tree for colcon builds:
#   mtl_perception/interfaces/msg/mtl_perception/InferenceStats.msg
#   mtl_perception/interfaces/msg/vision_msgs/<Type>.msg
INTERFACE_SOURCES = {
    "mtl_perception": REPO_ROOT / "msg",
    "vision_msgs": REPO_ROOT / "vision_msgs_twin" / "msg",
}


class BuildPyWithInterfaces(build_py):
    """build_py that also copies the .msg files into the built package."""

    def run(self):
        super().run()
        for interface_package, source_dir in INTERFACE_SOURCES.items():
            target_dir = Path(self.build_lib, "mtl_perception", "interfaces", "msg",
                              interface_package)
            target_dir.mkdir(parents=True, exist_ok=True)
            for msg_file in sorted(source_dir.glob("*.msg")):
                shutil.copyfile(msg_file, target_dir / msg_file.name)


def read_version():
    init_text = (REPO_ROOT / "mtl_perception" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', init_text, re.MULTILINE)
    if not match:
        raise RuntimeError("mtl_perception/__init__.py has no __version__ line")
    return match.group(1)


setup(
    name="mtl_perception",
    version=read_version(),
    description="Multitask segmentation + detection for drones (Marti & Maki, 2017)",
    long_description=(REPO_ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mtl_perception", "mtl_perception.*"]),
    cmdclass={"build_py": BuildPyWithInterfaces},
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "pyyaml",
        "pillow",
        "tqdm",
        "matplotlib",
        "scipy",
        "opencv-python-headless",
        "rosbags",
        "faster-coco-eval",
        "pycocotools",
        "tensorboard",
        "psutil",
        "tifffile",
        # The nodes' default engine (backend auto) on the CPU: onnxruntime, running the
        # checkpoint's ONNX export (torch.onnx's dynamo exporter needs onnx and onnxscript).
        "onnx",
        "onnxscript",
        "onnxruntime",
    ],
    extras_require={
        "export": [],  # kept for old install commands: the export tools are core now
        "test": ["pytest", "pytest-timeout"],
    },
    # Command-line tools of the ROS-free core. The modules arrive with their
    # features; keep this list in step with them.
    entry_points={
        "console_scripts": [
            "mtl-train=mtl_perception.training.cli:main",
            "mtl-eval=mtl_perception.evaluation.cli:main",
            "mtl-bench=mtl_perception.bench:main",
            "mtl-export=mtl_perception.export:main",
            "make-bag=mtl_perception.bags.make_bag:main",
            "bag-info=mtl_perception.bags.bag_info:main",
        ],
    },
)
