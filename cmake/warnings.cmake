# Strict warnings on exq's own targets only (third-party headers are SYSTEM).
add_library(exq_warnings INTERFACE)
target_compile_options(exq_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror -Wno-missing-field-initializers>)

add_library(exq_sanitize INTERFACE)
if(EXQ_SANITIZE)
  target_compile_options(exq_sanitize INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined>)
  target_link_options(exq_sanitize INTERFACE -fsanitize=address,undefined)
endif()

# exq_module(NAME DIR [DEPS ...]): one static library per source folder, sources globbed,
# so each folder builds and tests on its own.
function(exq_module name dir)
  file(GLOB _srcs CONFIGURE_DEPENDS ${dir}/*.cpp)
  if(NOT _srcs)  # folder not populated yet
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(${name} INTERFACE ${ARGN})
    return()
  endif()
  add_library(${name} STATIC ${_srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name} PUBLIC ${ARGN} PRIVATE exq_warnings exq_sanitize)
endfunction()
