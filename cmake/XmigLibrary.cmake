# What a library shows the rest of the tree: its public headers, and nothing
# else. Each folder is one concern with a small public header (README, Code
# map); the compiler holds that border, so a tool or a library that includes
# another folder's internals (io/ring.hpp, tunnel/state.hpp) fails to compile
# with "No such file" (test Borders.NonPublicHeadersDoNotCompile proves it).
#
# Includes are written from the source root everywhere ("tls/context.hpp"),
# but no library puts the source root on the include path. Instead:
#   ${PROJECT_BINARY_DIR}/exports/<target>/<folder>/<header>
#       a symbolic link to each public header, the target's PUBLIC include
#       directory: what its users (and theirs, through PUBLIC links) see;
#   ${PROJECT_BINARY_DIR}/own/<target>/<folder>
#       a symbolic link to the whole source folder, a PRIVATE include
#       directory: the target's own sources see all of their folder, so a
#       library that is only part of a folder (xmig_config, xmig_nftables and
#       xmig_tunnel in tunnel/; xmig_status_client, xmig_wire_analysis and
#       xmig_verify in verify/) keeps its folder's internals to itself.
# Links, not copies: an edit of a header is seen at once and a compiler
# message names a file that is edited in place. The links are made at
# configure time, from scratch each time, so a header taken off a list is no
# longer reachable after the next configure.

# xmig_public_headers(<target> <header>...)
#   <target>  a library added in the calling CMakeLists.txt
#   <header>  its public headers: file names in that CMakeLists.txt's folder,
#             which is the folder includes name ("tunnel" for tunnel/).
# The only list of public headers: tests/borders/check_borders.sh reads these
# calls too. Write each call as `xmig_public_headers(<target>` then the file
# names (lines may break), then `)`, with no variables in it.
function(xmig_public_headers target)
  file(RELATIVE_PATH folder ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
  set(exports ${PROJECT_BINARY_DIR}/exports/${target})
  file(REMOVE_RECURSE ${exports})
  file(MAKE_DIRECTORY ${exports}/${folder})
  foreach(header IN LISTS ARGN)
    set(source ${CMAKE_CURRENT_SOURCE_DIR}/${header})
    if(NOT EXISTS ${source})
      message(FATAL_ERROR "xmig_public_headers(${target}): ${folder}/${header} does not exist "
                          "(${CMAKE_CURRENT_LIST_FILE}): correct the file name or remove it from the list")
    endif()
    file(CREATE_LINK ${source} ${exports}/${folder}/${header} SYMBOLIC)
  endforeach()
  set(own ${PROJECT_BINARY_DIR}/own/${target})
  file(REMOVE_RECURSE ${own})
  file(MAKE_DIRECTORY ${own})
  file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR} ${own}/${folder} SYMBOLIC)
  target_include_directories(${target} PUBLIC ${exports} PRIVATE ${own})
endfunction()

# xmig_test_includes(): every target added in the calling CMakeLists.txt (and
# in the folders it adds after the call) sees the whole source root. For
# tests/ and fuzz/ only: a test or a fuzz target drives one part on its own
# (a pump over a socketpair, the config parser, one TLS record reader), so it
# may include more than the libraries' public headers. Never a header private
# to its folder (io/ring.hpp, io/worker.hpp, certs/detail.hpp,
# verify/live_detail.hpp): tests/borders/check_borders.sh keeps that rule,
# tests included.
function(xmig_test_includes)
  include_directories(${PROJECT_SOURCE_DIR})
endfunction()
