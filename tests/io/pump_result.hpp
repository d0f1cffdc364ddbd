// The result of one pump a test starts in its own process (tests/io,
// tests/ktls/records_vm_test.cpp): the PumpDone to hand over, and the wait for it.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "io/pump.hpp"

namespace xmig::test {

class PumpResult {
 public:
  // The PumpDone for Workers::start_pump (one pump per PumpResult).
  io::PumpDone callback() {
    return [this](const io::PumpStats& s) { done_.set_value(s); };
  }

  // The pump's stats once it has ended; a test failure and empty stats when it
  // has not ended within 20 s.
  io::PumpStats wait() {
    auto result = done_.get_future();
    if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      ADD_FAILURE() << "the pump did not end";
      return {};
    }
    return result.get();
  }

 private:
  std::promise<io::PumpStats> done_;
};

}  // namespace xmig::test
