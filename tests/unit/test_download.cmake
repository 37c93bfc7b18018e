# agent/download.c against tests/unit/range_server.py (a loopback HTTP/1.1
# server with faults chosen per case; Python standard library only).
add_executable(test_download ${CMAKE_CURRENT_LIST_DIR}/test_download.c)
target_link_libraries(test_download PRIVATE mf_agent PkgConfig::CURL PkgConfig::CMOCKA)
target_compile_definitions(test_download PRIVATE
  MF_RANGE_SERVER="${CMAKE_CURRENT_LIST_DIR}/range_server.py"
  MF_PYTHON="/usr/bin/python3")
add_test(NAME unit_download COMMAND test_download)
set_tests_properties(unit_download PROPERTIES TIMEOUT 120)
