"""cuda-python's runtime module, imported lazily, and return-code checking.

cuda-python returns ``(err, *values)`` tuples instead of raising; every call goes through
:func:`check` so a failing copy or launch raises with the CUDA error name instead of producing
garbage logits.
"""
from __future__ import annotations


def cudart():
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as rt  # noqa: PLC0415
    except ImportError:
        try:
            from cuda import cudart as rt  # noqa: PLC0415
        except ImportError:
            raise ImportError(
                "the TensorRT backend needs cuda-python: `pip install cuda-python` "
                "(match the major version to the CUDA of your JetPack, e.g. 'cuda-python>=12,<13')"
            ) from None
    return rt


def check(result, what: str = "CUDA call"):
    """Unpack a cuda-python ``(err, *values)`` result; raise ``RuntimeError`` unless success."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        rt = cudart()
        name = rt.cudaGetErrorName(err)
        name = name[1] if isinstance(name, tuple) else name
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise RuntimeError(f"{what} failed: {name} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values
