"""The inference engines behind :class:`~mtl_perception.predictor.Predictor` (plain Python, no ROS).

* :mod:`.backends`: ``auto`` | ``torch`` | ``onnxruntime``, which one runs where, which
  precision each engine takes (``int8``: onnxruntime on the CPU only);
* :mod:`.onnx_session`: the onnxruntime session (threads from the budget, execution providers)
  and a ``.onnx`` file's own description (config, class names, precision);
* :mod:`.onnx_cache`: the ONNX export cache keyed on checkpoint content, input size, resize,
  opset and library versions (atomic, locked, verified);
* :mod:`.calibration`: calibration frames read from a rosbag or an image folder;
* :mod:`.quantize`: int8 static QDQ quantization and its agreement with fp32.

May import data, models, bags and the top-level modules (export, checkpoint, letterbox,
postprocess; the predictor lazily, since it imports this folder).
"""
