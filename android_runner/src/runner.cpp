// Loads a .pte with the Module API (weights memory-mapped), checks the inputs against the method's meta,
// runs warm-up and timed iterations and reports outputs and figures.
#include "runner.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

#ifndef VGGT_ET_NO_ETDUMP
#include <executorch/devtools/etdump/etdump_flatcc.h>
#endif
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/backend_options_map.h>
#include <executorch/runtime/backend/options.h>
#include <executorch/runtime/core/exec_aten/util/scalar_type_util.h>
#include <executorch/runtime/platform/runtime.h>

#include "dtypes.h"
#include "stats.h"
#include "tensor_io.h"
#include "threadpool_api.h"

namespace vggt_et {
namespace {

using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
using executorch::runtime::Program;
using executorch::runtime::Tag;
using executorch::runtime::TensorInfo;
using Clock = std::chrono::steady_clock;

// A failure the runtime reported (exit code 1), as opposed to UsageError (exit code 2).
struct RuntimeFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double elapsed_ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

std::string error_text(Error error) {
  return std::string(executorch::runtime::to_string(error)) + " (0x" +
         [](unsigned value) {
           char hex[16];
           std::snprintf(hex, sizeof(hex), "%x", value);
           return std::string(hex);
         }(static_cast<unsigned>(error)) + ")";
}

std::vector<int64_t> meta_shape(const TensorInfo& info) {
  std::vector<int64_t> shape;
  for (const int32_t dim : info.sizes()) {
    shape.push_back(dim);
  }
  return shape;
}

Module::LoadMode module_load_mode(LoadMode mode) {
  switch (mode) {
    case LoadMode::kMlock:
      return Module::LoadMode::MmapUseMlockIgnoreErrors;
    case LoadMode::kFile:
      return Module::LoadMode::File;
    case LoadMode::kMmap:
    default:
      return Module::LoadMode::Mmap;
  }
}

std::string meta_json(const MethodMeta& meta) {
  std::ostringstream json;
  const auto tensor_list = [&](const char* key, size_t count, bool inputs) {
    json << json_string(key) << ": [";
    for (size_t i = 0; i < count; ++i) {
      json << (i ? ", " : "");
      auto info = inputs ? meta.input_tensor_meta(i) : meta.output_tensor_meta(i);
      if (!info.ok()) {
        json << "null";
        continue;
      }
      json << "{\"shape\": [";
      const auto shape = meta_shape(*info);
      for (size_t d = 0; d < shape.size(); ++d) {
        json << (d ? ", " : "") << shape[d];
      }
      json << "], \"dtype\": " << json_string(dtype_name(info->scalar_type())) << ", \"nbytes\": " << info->nbytes()
           << "}";
    }
    json << "]";
  };
  json << "{\"method\": " << json_string(meta.name()) << ", ";
  tensor_list("inputs", meta.num_inputs(), true);
  json << ", ";
  tensor_list("outputs", meta.num_outputs(), false);
  json << "}";
  return json.str();
}

// Without --method: the method whose inputs the files fit (shape for .npy, size for raw bytes), so a
// program with one method per frame count runs the count the inputs have. With one candidate method its
// own input check reports any mismatch; with several and no fit, the message lists what they take.
std::string choose_method(Module& module, const Options& options, const std::vector<HostTensor>& inputs) {
  if (!options.method.empty()) {
    return options.method;
  }
  auto all = module.method_names();
  if (!all.ok() || inputs.empty()) {
    return "forward";
  }
  std::vector<std::string> names(all->begin(), all->end());
  std::sort(names.begin(), names.end());
  std::vector<std::string> candidates;
  std::string accepted;
  for (const std::string& name : names) {
    auto meta = module.method_meta(name);
    if (!meta.ok() || meta->num_inputs() != inputs.size()) {
      continue;
    }
    bool fits = true;
    std::vector<int64_t> first_shape;
    for (size_t i = 0; i < inputs.size(); ++i) {
      auto info = meta->input_tensor_meta(i);
      if (!info.ok()) {
        fits = false;
        break;
      }
      const std::vector<int64_t> shape = meta_shape(*info);
      if (i == 0) {
        first_shape = shape;
      }
      fits = fits && (inputs[i].has_shape ? inputs[i].shape == shape : inputs[i].bytes.size() == info->nbytes());
    }
    if (fits) {
      return name;
    }
    candidates.push_back(name);
    accepted += (accepted.empty() ? "" : ", ") + name + " " + shape_to_string(first_shape);
  }
  if (candidates.size() <= 1) {
    return candidates.empty() ? "forward" : candidates[0];
  }
  const std::string given = inputs[0].has_shape ? "shape " + shape_to_string(inputs[0].shape)
                                                 : std::to_string(inputs[0].bytes.size()) + " bytes";
  throw UsageError{"input 0 ('" + options.inputs[0] + "') has " + given +
                   ", which no method of this program takes (" + accepted + "); give inputs of one of those shapes"};
}

// Checks input file `index` (already read) against the method's expectation; the TensorPtr takes the bytes.
TensorPtr make_input(HostTensor host, const std::string& path, size_t index, const TensorInfo& info) {
  const std::vector<int64_t> expected_shape = meta_shape(info);
  const std::string where = "input " + std::to_string(index) + " ('" + path + "')";
  if (host.has_shape) {
    std::string descr = host.descr;
    if (!descr.empty() && descr[0] == '=') {
      descr[0] = '<';
    }
    const std::string wanted = numpy_descr(info.scalar_type());
    if (descr != wanted) {
      throw UsageError{where + " has dtype " + host.descr + " but the program expects " +
                       dtype_name(info.scalar_type()) + " (" + wanted + "); convert it with x.astype(...)"};
    }
    if (host.shape != expected_shape) {
      throw UsageError{where + " has shape " + shape_to_string(host.shape) + " but the program expects " +
                       shape_to_string(expected_shape) + "; the .pte was exported for that shape"};
    }
  }
  if (host.bytes.size() != info.nbytes()) {
    throw UsageError{where + " holds " + std::to_string(host.bytes.size()) + " bytes but the program expects " +
                     std::to_string(info.nbytes()) + " (" + dtype_name(info.scalar_type()) + " " +
                     shape_to_string(expected_shape) + ")"};
  }
  std::vector<executorch::aten::SizesType> sizes(expected_shape.begin(), expected_shape.end());
  return executorch::extension::make_tensor_ptr(std::move(sizes), std::move(host.bytes), {}, {},
                                                info.scalar_type());
}

void write_outputs(const Options& options, const std::vector<EValue>& outputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].isTensor()) {
      std::fprintf(stderr, "warning: output %zu is not a tensor; not written\n", i);
      continue;
    }
    const auto& tensor = outputs[i].toTensor();
    std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
    const std::string descr = numpy_descr(tensor.scalar_type());
    const std::string stem = options.output_dir + "/output_" + std::to_string(i);
    if (options.output_format == OutputFormat::kNpy && !descr.empty()) {
      write_npy(stem + ".npy", descr, shape, tensor.const_data_ptr(), tensor.nbytes());
    } else {
      write_raw(stem + ".bin", tensor.const_data_ptr(), tensor.nbytes());
    }
  }
}

void write_etdump(const std::string& path, Module& module) {
#ifdef VGGT_ET_NO_ETDUMP
  (void)path;
  (void)module;
#else
  auto* tracer = static_cast<executorch::etdump::ETDumpGen*>(module.event_tracer());
  executorch::etdump::ETDumpResult result = tracer->get_etdump_data();
  if (result.buf == nullptr || result.size == 0) {
    throw RuntimeFailure("the event tracer recorded nothing; ETDump not written");
  }
  write_raw(path, result.buf, result.size);
  std::free(result.buf);
#endif
}

std::string outputs_json(const Options& options, const std::vector<EValue>& outputs) {
  std::ostringstream json;
  json << "[";
  for (size_t i = 0; i < outputs.size(); ++i) {
    json << (i ? ", " : "");
    if (!outputs[i].isTensor()) {
      json << "null";
      continue;
    }
    const auto& tensor = outputs[i].toTensor();
    json << "{\"shape\": [";
    for (ssize_t d = 0; d < tensor.dim(); ++d) {
      json << (d ? ", " : "") << tensor.size(d);
    }
    json << "], \"dtype\": " << json_string(dtype_name(tensor.scalar_type()));
    if (!options.output_dir.empty()) {
      const bool npy = options.output_format == OutputFormat::kNpy && !numpy_descr(tensor.scalar_type()).empty();
      json << ", \"file\": "
           << json_string(options.output_dir + "/output_" + std::to_string(i) + (npy ? ".npy" : ".bin"));
    }
    json << "}";
  }
  return json.str() + "]";
}

int run_checked(const Options& options) {
  struct stat file_stat {};
  if (stat(options.model_path.c_str(), &file_stat) != 0 || !S_ISREG(file_stat.st_mode)) {
    throw UsageError{"cannot open program '" + options.model_path + "': check the path"};
  }
  if (!options.output_dir.empty()) {
    struct stat dir_stat {};
    if (stat(options.output_dir.c_str(), &dir_stat) != 0 || !S_ISDIR(dir_stat.st_mode)) {
      throw UsageError{"--output-dir '" + options.output_dir + "' is not a directory; create it first"};
    }
  }
#ifdef VGGT_ET_NO_ETDUMP
  if (!options.etdump_path.empty()) {
    throw UsageError{"this runner was built without ETDump (VGGT_ET_WITH_ETDUMP=OFF); rebuild it to use --etdump"};
  }
#endif
  executorch::runtime::runtime_init();
  if (options.threads > 0) {
    // Before any method is loaded: delegates keep the pool they were initialised with.
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(options.threads);
  }
  const int threads = static_cast<int>(executorch::extension::threadpool::get_threadpool()->get_thread_count());

  // Input files are read before the clock starts: load_ms is the program's load alone.
  std::vector<HostTensor> host_inputs;
  for (const std::string& path : options.inputs) {
    host_inputs.push_back(read_tensor_file(path));
  }

  const Clock::time_point load_start = Clock::now();
  std::unique_ptr<executorch::runtime::EventTracer> tracer;
#ifndef VGGT_ET_NO_ETDUMP
  if (!options.etdump_path.empty()) {
    tracer = std::make_unique<executorch::etdump::ETDumpGen>();
  }
#endif
  Module module(options.model_path, module_load_mode(options.load_mode), std::move(tracer));
  executorch::runtime::LoadBackendOptionsMap backend_options;
  executorch::runtime::BackendOptions<4> xnnpack_options;
  if (!options.xnnpack_cache.empty()) {
    xnnpack_options.set_option("weight_cache_enabled", true);
    xnnpack_options.set_option("packed_cache_path", options.xnnpack_cache.c_str());
    xnnpack_options.set_option("save_weight_cache_on_disk", true);
    backend_options.set_options("XnnpackBackend", xnnpack_options.view());
  }
  const Error load_error = module.load(backend_options, Program::Verification::InternalConsistency);
  if (load_error != Error::Ok) {
    throw UsageError{"cannot load program '" + options.model_path + "': " + error_text(load_error) +
                     "; the file is truncated or not a .pte, re-export it"};
  }
  const std::string method = choose_method(module, options, host_inputs);
  auto meta = module.method_meta(method);
  if (!meta.ok()) {
    std::string names;
    if (auto all = module.method_names(); all.ok()) {
      for (const auto& name : *all) {
        names += (names.empty() ? "" : ", ") + name;
      }
    }
    throw UsageError{"program has no method '" + method + "' (it has: " + names + "); pass --method"};
  }
  if (options.print_meta) {
    std::printf("%s\n", meta_json(*meta).c_str());
    return 0;
  }

  const size_t input_count = meta->num_inputs();
  if (options.inputs.size() != input_count) {
    throw UsageError{"method '" + method + "' takes " + std::to_string(input_count) + " inputs but " +
                     std::to_string(options.inputs.size()) + " --input files were given (see --print-meta)"};
  }
  std::vector<TensorPtr> input_tensors;
  std::vector<EValue> inputs;
  for (size_t i = 0; i < input_count; ++i) {
    auto tag = meta->input_tag(i);
    if (!tag.ok() || *tag != Tag::Tensor) {
      throw UsageError{"input " + std::to_string(i) + " is not a tensor; the runner only feeds tensor inputs"};
    }
    input_tensors.push_back(
        make_input(std::move(host_inputs[i]), options.inputs[i], i, *meta->input_tensor_meta(i)));
    inputs.emplace_back(*input_tensors.back());
  }

  const Error method_error = module.load_method(method);
  if (method_error != Error::Ok) {
    throw RuntimeFailure("cannot load method '" + method + "': " + error_text(method_error) +
                         " (missing operator or backend? the log above names it)");
  }
  const double load_ms = elapsed_ms(load_start);
  const int64_t rss_after_load = current_rss_bytes();

  std::vector<double> latencies;
  std::vector<EValue> outputs;
  for (int i = 0; i < options.warmup + options.iters; ++i) {
    const Clock::time_point start = Clock::now();
    auto result = module.execute(method, inputs);
    const double took = elapsed_ms(start);
    if (!result.ok()) {
      throw RuntimeFailure("execution " + std::to_string(i) + " failed: " + error_text(result.error()));
    }
    if (i >= options.warmup) {
      latencies.push_back(took);
    }
    if (i + 1 == options.warmup + options.iters) {
      outputs = std::move(*result);
    }
  }
  if (!options.output_dir.empty()) {
    write_outputs(options, outputs);
  }
  if (!options.etdump_path.empty()) {
    write_etdump(options.etdump_path, module);
  }

  const LatencyStats stats = summarize_latencies(latencies);
  std::ostringstream json;
  json.precision(6);
  json << std::fixed << "{\"where\": " << json_string(options.where.empty() ? platform_label() : options.where)
       << ", \"iters\": " << options.iters << ", \"warmup\": " << options.warmup << ", \"threads\": " << threads
       << ", \"load_ms\": " << load_ms << ", \"latency_ms\": {\"min\": " << stats.min_ms
       << ", \"median\": " << stats.median_ms << ", \"p90\": " << stats.p90_ms << ", \"max\": " << stats.max_ms
       << "}, \"peak_rss_bytes\": " << peak_rss_bytes() << ", \"rss_after_load_bytes\": " << rss_after_load
       << ", \"pte_bytes\": " << file_stat.st_size
       << ", \"samples_ms\": [";
  for (size_t i = 0; i < latencies.size(); ++i) {
    json << (i ? ", " : "") << latencies[i];
  }
  json << "], \"outputs\": " << outputs_json(options, outputs) << "}";
  const std::string line = json.str();
  if (!options.json_path.empty()) {
    write_raw(options.json_path, (line + "\n").data(), line.size() + 1);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

int run(const Options& options) {
  try {
    return run_checked(options);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "error: %s\n", error.message.c_str());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}

}  // namespace vggt_et
