# The package downloader (libcurl): resumable, verified blob fetch.
target_sources(mf_agent PRIVATE ${CMAKE_CURRENT_LIST_DIR}/download.c)
target_link_libraries(mf_agent PUBLIC PkgConfig::CURL)
