"""The compiler: checkpoint → export wrapper → passes → quantization → lowering (XNNPACK, QNN, portable; or
litert-torch for TFLite) → .pte + report. compile.py drives the stages in order and checks every argument
before the first; export.py, quantize.py, lowering.py, weight_spill.py and tflite.py are one stage each.

Imports: the model, data, fgq (the w4-fisher stage) and the generic passes/quantizers; never outputs, runtime or
commands (a compile runs no program).
"""
