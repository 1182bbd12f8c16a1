"""Pure logic behind `gsdeploy export --engine trt|torch-trt`: no TensorRT import anywhere here.

One module a topic: `versions`, `batches` (optimisation profiles), `options` (build settings,
tolerances), `onnx_precision`, `build_plan` (flags per TensorRT version), `dla`, `engines`
(manifest, compatibility, plan headers) and `calibration`.

Everything that can be decided without a GPU lives in this module so it is tested on every
machine: batch ranges and optimisation-profile shapes, which builder flags a precision needs on
TensorRT 10 versus 11, DLA rules, the manifest, engine/runtime compatibility and calibration data. `tensorrt.py` only applies these decisions to the real
API, so the code that cannot be tested here stays mechanical.

TensorRT facts this relies on (read from NVIDIA's docs and the TensorRT OSS sources):
- TensorRT 11 removed weak typing: BuilderFlag.FP16/INT8, IBuilderConfig.int8_calibrator and
  set_calibration_profile are gone; precision comes from the network's own types (ModelOpt
  AutoCast for fp16, Q/DQ nodes for int8).
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html
- In 10.x implicit INT8 calibration still works but is deprecated since 10.1 ("Superseded by
  explicit quantization"); weak typing is deprecated since 10.12.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Int8/Calibrator.html
- Q/DQ networks: "Use explicit quantization with Strong Typing. Precision-control build flags
  are not required and should not be specified."
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html
- DLA: fp16/int8 only, no dynamic dimensions ("the profile's min, max, and opt values must be
  equal"), batch <= 4096; unavailable in TensorRT 11.0-11.4.0, back in 11.4.1 on Jetson AGX
  Orin with JetPack 7.2.2+; 10.7 was the last 10.x release with DLA.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/work-with-dla.html
- Engines are not portable across TensorRT versions (without the version-compatible flag) nor
  across GPU architectures (without hardware compatibility mode).
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/getting-started/support-matrix.html
"""
