// Runs one method of a .pte as the options say; returns the process exit code (0 ok, 2 bad input, 1 runtime
// failure) after printing a one-line "error: ..." to stderr for anything that went wrong.
#pragma once

#include "options.h"

namespace vggt_et {

int run(const Options& options);

}  // namespace vggt_et
