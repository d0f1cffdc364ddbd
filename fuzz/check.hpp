// What the fuzz targets share: a check that stops the run with the failed
// condition, so a property broken by an input is a finding (with the input
// saved by libFuzzer), like a sanitizer report.
#pragma once

#include <cstdio>
#include <cstdlib>

#define XMIG_FUZZ_CHECK(cond)                                                            \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
