# xmig-bench: end-to-end throughput, CPU per GB, handshake rate; the relay,
# pair and report helpers of bench/compare. The library lives in bench/.
if(XMIG_BENCH)
  add_executable(xmig-bench ${CMAKE_CURRENT_LIST_DIR}/xmig-bench.cpp)
  target_link_libraries(xmig-bench PRIVATE xmig_bench CLI11::CLI11)
endif()
