# xmig-verify: proves migration traffic is encrypted (live check, capture check).
if(TARGET xmig_verify)
  add_executable(xmig-verify ${CMAKE_CURRENT_LIST_DIR}/xmig-verify.cpp)
  target_link_libraries(xmig-verify PRIVATE xmig_verify CLI11::CLI11)
endif()
