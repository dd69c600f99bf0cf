#include "dtypes.h"

namespace vggt_et {

using executorch::aten::ScalarType;

std::string numpy_descr(ScalarType type) {
  switch (type) {
    case ScalarType::Float:
      return "<f4";
    case ScalarType::Double:
      return "<f8";
    case ScalarType::Half:
      return "<f2";
    case ScalarType::Byte:
      return "|u1";
    case ScalarType::Char:
      return "|i1";
    case ScalarType::Short:
      return "<i2";
    case ScalarType::Int:
      return "<i4";
    case ScalarType::Long:
      return "<i8";
    case ScalarType::Bool:
      return "|b1";
    default:
      return "";
  }
}

std::string dtype_name(ScalarType type) {
  switch (type) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Double:
      return "float64";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Byte:
      return "uint8";
    case ScalarType::Char:
      return "int8";
    case ScalarType::Short:
      return "int16";
    case ScalarType::Int:
      return "int32";
    case ScalarType::Long:
      return "int64";
    case ScalarType::Bool:
      return "bool";
    default:
      return "scalar_type_" + std::to_string(static_cast<int>(type));
  }
}

}  // namespace vggt_et
