// vggt_et_runner: benchmark and run a .pte on the host, under qemu, or on a phone.
#include <cstdio>

#include "options.h"
#include "runner.h"

int main(int argc, char** argv) {
  vggt_et::Options options;
  try {
    if (!vggt_et::parse_options(argc, argv, options)) {
      return 0;
    }
  } catch (const vggt_et::UsageError& error) {
    std::fprintf(stderr, "error: %s\n", error.message.c_str());
    return 2;
  }
  return vggt_et::run(options);
}
