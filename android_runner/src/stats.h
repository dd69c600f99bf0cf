// Latency statistics, process memory figures and the JSON line the runner prints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vggt_et {

struct LatencyStats {
  double min_ms = 0, median_ms = 0, p90_ms = 0, max_ms = 0;
};

// Percentiles by linear interpolation between order statistics (NumPy's default), so the Python side
// computes the same numbers from the same samples.
LatencyStats summarize_latencies(std::vector<double> samples_ms);

// Peak resident set size of this process in bytes: VmHWM from /proc/self/status, else getrusage.
int64_t peak_rss_bytes();

// Current resident set size in bytes (VmRSS), 0 where /proc is unavailable.
int64_t current_rss_bytes();

// "<os>-<machine>" from uname, e.g. "linux-aarch64".
std::string platform_label();

// Minimal JSON string escaping for paths and labels.
std::string json_string(const std::string& text);

}  // namespace vggt_et
