// The slice of ExecuTorch's thread pool API the runner needs. The wheel exports these functions from
// libexecutorch_threadpool but does not ship extension/threadpool/threadpool.h, so they are declared here
// with the same signatures (non-virtual members: only the mangled names matter for linking).
#pragma once

#include <cstddef>
#include <cstdint>

namespace executorch::extension::threadpool {

class ThreadPool {
 public:
  size_t get_thread_count() const;
  // Recreates the pool with num_threads workers. Unsafe while anything holds the old pool, so it must run
  // before a method is loaded (XNNPACK keeps the pthreadpool it was initialised with).
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};

ThreadPool* get_threadpool();

}  // namespace executorch::extension::threadpool
