// ExecuTorch scalar types <-> NumPy dtype strings, for checking .npy inputs and writing .npy outputs.
#pragma once

#include <string>

#include <executorch/runtime/core/exec_aten/exec_aten.h>

namespace vggt_et {

// "<f4" etc.; empty when NumPy has no equivalent (e.g. bfloat16), then outputs are written raw.
std::string numpy_descr(executorch::aten::ScalarType type);

// Human-readable name, e.g. "float32", for error messages.
std::string dtype_name(executorch::aten::ScalarType type);

}  // namespace vggt_et
