/* A stand-in for TensorRT's native libraries, for tests only (tests/test_trt_bindings.py).
 *
 * TensorRT's Python bindings (tensorrt.so in the tensorrt-bindings / tensorrt-cu12-bindings
 * wheels) link against libnvinfer.so.N, libnvonnxparser.so.N, libnvinfer_plugin.so.N (and, on
 * 8.x, libnvparsers.so.8), which need NVIDIA's own package index and a GPU. The bindings import
 * only the C entry points below (`nm -D --undefined-only tensorrt.so`, 8.6.1 / 10.x / 11.x).
 * Compiled as each of those libraries, this file lets the real module import with its real
 * enums, classes, methods and docstrings. Every function returns NULL: creating a Builder,
 * Runtime, Refitter or OnnxParser then fails exactly as it does without a usable GPU
 * (pybind11 "factory function returned nullptr"), so nothing TensorRT computes is imitated.
 */
#include <stddef.h>

#define STANDIN(name) void *name(void) { return NULL; }

/* libnvinfer */
STANDIN(createInferBuilder_INTERNAL)
STANDIN(createInferRuntime_INTERNAL)
STANDIN(createInferRefitter_INTERNAL)
STANDIN(getPluginRegistry)
STANDIN(getBuilderPluginRegistry)
/* libnvinfer_plugin */
STANDIN(initLibNvInferPlugins)
/* libnvonnxparser */
STANDIN(createNvOnnxParser_INTERNAL)
STANDIN(createNvOnnxParserRefitter_INTERNAL)
STANDIN(getNvOnnxParserVersion)
/* libnvparsers (8.x only: the UFF and Caffe parsers, C++ symbols by their mangled names) */
STANDIN(_ZN11nvuffparser15createUffParserEv)
STANDIN(_ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi)
STANDIN(_ZN14nvcaffeparser117createCaffeParserEv)
STANDIN(_ZN14nvcaffeparser123shutdownProtobufLibraryEv)
