"""pytest plugin of scripts/gpu_check.sh: run only the tests that need CUDA.

A CUDA test is one with a ``skipif`` marker whose reason names CUDA or a GPU (the suite's
convention: ``skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")``), so the
selection follows the markers, not test names. Load with ``-p gpu_check_select`` and this
folder on PYTHONPATH.
"""

import re

_CUDA_REASON = re.compile(r"\b(cuda|gpu)\b", re.IGNORECASE)


def needs_cuda(item) -> bool:
    return any(_CUDA_REASON.search(str(marker.kwargs.get("reason", ""))) for marker in item.iter_markers("skipif"))


def pytest_collection_modifyitems(config, items):
    selected = [item for item in items if needs_cuda(item)]
    deselected = [item for item in items if not needs_cuda(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected
