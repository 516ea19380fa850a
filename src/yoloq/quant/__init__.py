"""The quantization core: quantizers, calibrators, quantized modules, insertion,
calibration. It knows nothing of YOLO and works on any torch CNN."""

from yoloq.quant.calib import HistogramCalibrator, MaxCalibrator, SignedHistogramCalibrator
from yoloq.quant.calibrate import (
    METHODS,
    CalibrationRun,
    calibrate,
    disable_quantization,
    enable_quantization,
)
from yoloq.quant.insert import QuantSummary, quantize
from yoloq.quant.modules import (
    DEFAULT_QUANT_MODULES,
    Add,
    Concat,
    QuantAdd,
    QuantConcat,
    QuantModule,
    register_quant_module,
)
from yoloq.quant.profiles import PROFILES, profile_config
from yoloq.quant.quantizer import QuantMode, TensorQuantizer, iter_quantizers
from yoloq.quant.spec import QuantConfig, QuantRule, QuantSpec
from yoloq.quant.state import load_quant_state_dict, quant_state_dict

__all__ = [
    "Add",
    "Concat",
    "DEFAULT_QUANT_MODULES",
    "METHODS",
    "PROFILES",
    "CalibrationRun",
    "HistogramCalibrator",
    "MaxCalibrator",
    "SignedHistogramCalibrator",
    "QuantAdd",
    "QuantConcat",
    "QuantConfig",
    "QuantMode",
    "QuantModule",
    "QuantRule",
    "QuantSpec",
    "QuantSummary",
    "TensorQuantizer",
    "calibrate",
    "disable_quantization",
    "enable_quantization",
    "iter_quantizers",
    "load_quant_state_dict",
    "profile_config",
    "quant_state_dict",
    "quantize",
    "register_quant_module",
]
