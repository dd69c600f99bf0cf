// Reading and writing tensors as .npy (NumPy format 1.0-3.0, C order) or raw bytes.
// Independent of ExecuTorch so it can be reasoned about (and fail) on its own: every malformed file is a
// UsageError naming the file and what is wrong with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vggt_et {

struct HostTensor {
  std::string descr;            // NumPy dtype string, e.g. "<f4"; empty for raw bytes
  std::vector<int64_t> shape;   // empty for raw bytes (unknown) and for 0-d arrays from .npy
  bool has_shape = false;       // true when read from .npy
  std::vector<uint8_t> bytes;   // element data, C order
};

// True when the path ends in ".npy".
bool is_npy_path(const std::string& path);

// Reads a .npy file (header checked, data length checked) or, for any other name, the raw bytes.
HostTensor read_tensor_file(const std::string& path);

// Writes a .npy v1.0 file atomically (temp file + rename); throws std::runtime_error on I/O failure.
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t nbytes);

// Writes raw bytes atomically.
void write_raw(const std::string& path, const void* data, size_t nbytes);

// "(1, 3, 32, 32)" style, for messages.
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace vggt_et
