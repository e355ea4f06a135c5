"""Multitask segmentation + detection for drones (Martí & Maki, 2017).

Everything in this package except :mod:`mtl_perception.ros` is plain PyTorch and
numpy, so it installs and runs on a training box without ROS.
"""

from pkgutil import extend_path

# In a source checkout next to a colcon install, let `mtl_perception.msg` (generated into
# the install) resolve even when the source tree comes first on sys.path.
__path__ = extend_path(__path__, __name__)

__version__ = "0.2.0"
