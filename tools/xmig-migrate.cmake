# xmig-migrate: one live migration through the local tunnel on a socket set of
# its own, with progress from the status endpoint. Links the config loader and
# the status client only, not the data path.
add_executable(xmig-migrate ${CMAKE_CURRENT_LIST_DIR}/xmig-migrate.cpp)
target_link_libraries(xmig-migrate PRIVATE xmig_config xmig_status_client CLI11::CLI11)
