# CMake package config of sync-client: find_package(sync_client REQUIRED PATHS <dist>)
# then target_link_libraries(app sync_client). Links the static library by default;
# set SYNC_CLIENT_SHARED=ON before find_package to link libsync_client.so.
get_filename_component(_sync_client_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET sync_client)
  if(SYNC_CLIENT_SHARED)
    add_library(sync_client SHARED IMPORTED)
    set(_sync_client_lib "${_sync_client_prefix}/lib/libsync_client.so")
  else()
    add_library(sync_client STATIC IMPORTED)
    set(_sync_client_lib "${_sync_client_prefix}/lib/libsync_client.a")
  endif()
  set_target_properties(sync_client PROPERTIES
    IMPORTED_LOCATION "${_sync_client_lib}"
    INTERFACE_INCLUDE_DIRECTORIES "${_sync_client_prefix}/include"
    INTERFACE_LINK_LIBRARIES "pthread;dl;m")
endif()
set(sync_client_FOUND TRUE)
