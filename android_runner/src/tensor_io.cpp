#include "tensor_io.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "options.h"

namespace vggt_et {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLength = 6;

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) {
    throw UsageError{"cannot open input '" + path + "': check the path"};
  }
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
}

// Value text after 'key': in a NumPy header dict, up to the next top-level comma or closing brace.
std::string header_value(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  size_t at = header.find(quoted);
  if (at == std::string::npos) {
    throw UsageError{"'" + path + "' is not a valid .npy: header has no " + quoted};
  }
  at = header.find(':', at + quoted.size());
  if (at == std::string::npos) {
    throw UsageError{"'" + path + "' is not a valid .npy: malformed header"};
  }
  ++at;
  while (at < header.size() && header[at] == ' ') {
    ++at;
  }
  size_t end = at;
  int depth = 0;
  while (end < header.size()) {
    const char c = header[end];
    if (c == '(') {
      ++depth;
    } else if (c == ')') {
      --depth;
    } else if ((c == ',' || c == '}') && depth == 0) {
      break;
    }
    ++end;
  }
  return header.substr(at, end - at);
}

size_t descr_item_size(const std::string& descr) {
  if (descr.size() < 3) {
    return 0;
  }
  return static_cast<size_t>(std::strtoul(descr.c_str() + 2, nullptr, 10));
}

void write_atomically(const std::string& path, const std::string& header, const void* data, size_t nbytes) {
  const std::string temp = path + ".part";
  {
    std::ofstream stream(temp, std::ios::binary | std::ios::trunc);
    if (!stream) {
      throw std::runtime_error("cannot write '" + temp + "': check that the output directory exists");
    }
    stream.write(header.data(), static_cast<std::streamsize>(header.size()));
    stream.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
    if (!stream) {
      std::remove(temp.c_str());
      throw std::runtime_error("short write to '" + temp + "': is the disk full?");
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    throw std::runtime_error("cannot rename '" + temp + "' to '" + path + "'");
  }
}

}  // namespace

bool is_npy_path(const std::string& path) {
  return path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return text + (shape.size() == 1 ? ",)" : ")");
}

HostTensor read_tensor_file(const std::string& path) {
  std::vector<uint8_t> content = read_all(path);
  HostTensor tensor;
  if (!is_npy_path(path)) {
    tensor.bytes = std::move(content);
    return tensor;
  }
  if (content.size() < kMagicLength + 4 || std::memcmp(content.data(), kMagic, kMagicLength) != 0) {
    throw UsageError{"'" + path + "' is not a .npy file (bad magic); write it with numpy.save"};
  }
  const uint8_t major = content[6];
  size_t header_length = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_length = content[8] | (content[9] << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (content.size() < 12) {
      throw UsageError{"'" + path + "' is a truncated .npy file"};
    }
    header_length = content[8] | (content[9] << 8) | (content[10] << 16) | (static_cast<size_t>(content[11]) << 24);
    header_start = 12;
  } else {
    throw UsageError{"'" + path + "' uses .npy format version " + std::to_string(major) + "; save with numpy.save"};
  }
  if (content.size() < header_start + header_length) {
    throw UsageError{"'" + path + "' is a truncated .npy file (header cut short)"};
  }
  const std::string header(content.begin() + header_start, content.begin() + header_start + header_length);
  std::string descr = header_value(header, "descr", path);
  if (descr.size() < 2 || descr.front() != '\'' || descr.back() != '\'') {
    throw UsageError{"'" + path + "' has an unsupported dtype " + descr + "; use a plain numeric dtype"};
  }
  tensor.descr = descr.substr(1, descr.size() - 2);
  if (header_value(header, "fortran_order", path) != "False") {
    throw UsageError{"'" + path + "' is Fortran-ordered; save numpy.ascontiguousarray(x) instead"};
  }
  const std::string shape_text = header_value(header, "shape", path);
  tensor.has_shape = true;
  size_t count = 1;
  for (size_t at = 0; at < shape_text.size();) {
    if (std::isdigit(static_cast<unsigned char>(shape_text[at]))) {
      char* end = nullptr;
      const long long dim = std::strtoll(shape_text.c_str() + at, &end, 10);
      tensor.shape.push_back(dim);
      count *= static_cast<size_t>(dim);
      at = static_cast<size_t>(end - shape_text.c_str());
    } else {
      ++at;
    }
  }
  const size_t item_size = descr_item_size(tensor.descr);
  if (item_size == 0) {
    throw UsageError{"'" + path + "' has an unsupported dtype '" + tensor.descr + "'"};
  }
  const size_t data_start = header_start + header_length;
  const size_t expected = count * item_size;
  if (content.size() - data_start != expected) {
    throw UsageError{"'" + path + "' holds " + std::to_string(content.size() - data_start) + " data bytes but shape " +
                     shape_to_string(tensor.shape) + " of " + tensor.descr + " needs " + std::to_string(expected) +
                     "; the file is truncated or corrupt"};
  }
  tensor.bytes.assign(content.begin() + data_start, content.end());
  return tensor;
}

void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t nbytes) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_to_string(shape) + ", }";
  // Magic (6) + version (2) + length (2) + dict + padding + '\n' is a multiple of 64, as NumPy writes it.
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string header(kMagic, kMagicLength);
  header.push_back('\x01');
  header.push_back('\x00');
  header.push_back(static_cast<char>(dict.size() & 0xff));
  header.push_back(static_cast<char>((dict.size() >> 8) & 0xff));
  header += dict;
  write_atomically(path, header, data, nbytes);
}

void write_raw(const std::string& path, const void* data, size_t nbytes) {
  write_atomically(path, std::string(), data, nbytes);
}

}  // namespace vggt_et
