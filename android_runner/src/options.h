// Command-line options of the runner. Parsing is separate from running so a bad flag is reported before
// the (possibly large) program is touched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vggt_et {

enum class LoadMode { kMmap, kMlock, kFile };
enum class OutputFormat { kNpy, kRaw };

struct Options {
  std::string model_path;
  std::string method;  // empty: the method whose input shapes the --input files fit ("forward" if one)
  std::vector<std::string> inputs;  // one file per program input, .npy or raw bytes
  std::string output_dir;           // empty: outputs are not written
  OutputFormat output_format = OutputFormat::kNpy;
  std::string json_path;            // empty: the JSON line goes to stdout only
  std::string etdump_path;          // empty: no event tracer
  std::string xnnpack_cache;        // empty: XNNPACK packs weights at load; else packed weights persist here
  std::string where;                // label in the JSON; empty: "<os>-<machine>"
  LoadMode load_mode = LoadMode::kMmap;
  int warmup = 1;
  int iters = 10;
  int threads = 0;  // 0: leave the runtime's default thread pool alone
  bool print_meta = false;
};

// Thrown for anything the user can fix (bad flag, wrong input); the message names the problem and the fix.
struct UsageError {
  std::string message;
};

// Parses argv; throws UsageError. Returns false when --help was printed and the caller should exit 0.
bool parse_options(int argc, char** argv, Options& options);

}  // namespace vggt_et
