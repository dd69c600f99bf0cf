#include "options.h"

#include <cstdio>
#include <cstdlib>

namespace vggt_et {
namespace {

constexpr const char* kUsage =
    "usage: vggt_et_runner --model M.pte [--input FILE]... [--output-dir DIR] [--output-format npy|raw]\n"
    "                      [--warmup N] [--iters N] [--threads T] [--json FILE] [--etdump FILE]\n"
    "                      [--load-mode mmap|mlock|file] [--method NAME] [--where LABEL] [--print-meta]\n"
    "                      [--xnnpack-cache FILE]\n"
    "\n"
    "Runs METHOD of a .pte program (default: the method whose input shapes the --input files have, e.g.\n"
    "the frame count of a multi-frame program; 'forward' when there are no inputs): --warmup untimed then --iters timed executions, writes the outputs\n"
    "of the last one to DIR (output_<i>.npy or .bin) and prints one JSON line with latency statistics,\n"
    "load time and peak RSS. Inputs are .npy files (shape and dtype checked) or raw little-endian bytes\n"
    "(size checked), one per program input, in order. --print-meta prints the method's inputs and\n"
    "outputs as JSON and exits. --xnnpack-cache keeps XNNPACK's packed weights in FILE (written on the\n"
    "first run, memory-mapped on later ones), so later loads neither repack nor hold two copies.\n"
    "Exit codes: 0 ok, 2 bad usage or input, 1 runtime failure.\n";

int parse_int(const std::string& flag, const std::string& text, int minimum) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < minimum || value > 1000000) {
    throw UsageError{flag + " expects an integer >= " + std::to_string(minimum) + ", got '" + text + "'"};
  }
  return static_cast<int>(value);
}

}  // namespace

bool parse_options(int argc, char** argv, Options& options) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      return false;
    }
    if (flag == "--print-meta") {
      options.print_meta = true;
      continue;
    }
    if (i + 1 >= argc) {
      throw UsageError{flag.rfind("--", 0) == 0 ? flag + " needs a value" : "unexpected argument '" + flag + "'"};
    }
    const std::string value = argv[++i];
    if (flag == "--model") {
      options.model_path = value;
    } else if (flag == "--method") {
      options.method = value;
    } else if (flag == "--input") {
      options.inputs.push_back(value);
    } else if (flag == "--output-dir") {
      options.output_dir = value;
    } else if (flag == "--output-format") {
      if (value == "npy") {
        options.output_format = OutputFormat::kNpy;
      } else if (value == "raw") {
        options.output_format = OutputFormat::kRaw;
      } else {
        throw UsageError{"--output-format expects npy or raw, got '" + value + "'"};
      }
    } else if (flag == "--json") {
      options.json_path = value;
    } else if (flag == "--etdump") {
      options.etdump_path = value;
    } else if (flag == "--xnnpack-cache") {
      if (value.size() >= 255) {
        throw UsageError{"--xnnpack-cache path is longer than 254 characters; use a shorter path"};
      }
      options.xnnpack_cache = value;
    } else if (flag == "--where") {
      options.where = value;
    } else if (flag == "--load-mode") {
      if (value == "mmap") {
        options.load_mode = LoadMode::kMmap;
      } else if (value == "mlock") {
        options.load_mode = LoadMode::kMlock;
      } else if (value == "file") {
        options.load_mode = LoadMode::kFile;
      } else {
        throw UsageError{"--load-mode expects mmap, mlock or file, got '" + value + "'"};
      }
    } else if (flag == "--warmup") {
      options.warmup = parse_int(flag, value, 0);
    } else if (flag == "--iters") {
      options.iters = parse_int(flag, value, 1);
    } else if (flag == "--threads") {
      options.threads = parse_int(flag, value, 0);
    } else {
      throw UsageError{"unknown option '" + flag + "' (see --help)"};
    }
  }
  if (options.model_path.empty()) {
    throw UsageError{"--model is required: pass the .pte to run (see --help)"};
  }
  return true;
}

}  // namespace vggt_et
