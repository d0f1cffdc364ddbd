# xmig-certs: CA, node certificates, CSR flow, rotation, CA rollover, checks.
add_executable(xmig-certs ${CMAKE_CURRENT_LIST_DIR}/xmig-certs.cpp)
target_link_libraries(xmig-certs PRIVATE xmig_certs)
