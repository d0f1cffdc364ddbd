add_executable(xmig-tunnel ${CMAKE_CURRENT_SOURCE_DIR}/xmig-tunnel.cpp)
target_link_libraries(xmig-tunnel PRIVATE xmig_tunnel CLI11::CLI11)
