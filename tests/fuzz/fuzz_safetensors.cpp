// libFuzzer target: qx_fuzz::safetensors (fuzz_bodies.hpp). qx::Error is a refused input; anything else is a bug.
#include "fuzz_bodies.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    qx_fuzz::safetensors({data, size});
  } catch (const qx::Error&) {
  }
  return 0;
}
