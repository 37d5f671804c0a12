# Proves that an installed qx works without CMake: compiles the consumer with exactly the flags of
# `pkg-config --cflags --libs qx` (the installed share/pkgconfig/qx.pc), then runs it.
# Run: cmake -DPREFIX=<install prefix> -DDATADIR=share -DCXX=<compiler> -DSOURCE=<main.cpp>
#            -DBINARY=<program to write> -DVERSION=<project version> -P pkg_config_consumer.cmake
cmake_minimum_required(VERSION 3.25)
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${PREFIX}/${DATADIR}/pkgconfig")

function(pkg_config out)
  execute_process(COMMAND ${PKG_CONFIG} ${ARGN} qx OUTPUT_VARIABLE text ERROR_VARIABLE error RESULT_VARIABLE code
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(code)
    message(FATAL_ERROR "pkg-config ${ARGN} qx failed (PKG_CONFIG_PATH=$ENV{PKG_CONFIG_PATH}): ${error}")
  endif()
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

pkg_config(version --modversion)
if(NOT version STREQUAL VERSION)
  message(FATAL_ERROR "qx.pc says version ${version}, the project is ${VERSION}")
endif()
# The include folder must be the installed one, wherever the prefix is (qx.pc is relocatable).
pkg_config(includedir --variable=includedir)
get_filename_component(includedir "${includedir}" REALPATH)
get_filename_component(expected "${PREFIX}/include" REALPATH)
if(NOT includedir STREQUAL expected OR NOT EXISTS "${includedir}/qx/qx.hpp")
  message(FATAL_ERROR "qx.pc's includedir is '${includedir}', expected the installed '${expected}'")
endif()

pkg_config(flags --cflags --libs)
message(STATUS "pkg-config --cflags --libs qx: ${flags}")
separate_arguments(flags UNIX_COMMAND "${flags}")
execute_process(COMMAND ${CXX} -O1 ${SOURCE} ${flags} -o ${BINARY} RESULT_VARIABLE code)
if(code)
  message(FATAL_ERROR "compiling ${SOURCE} with pkg-config's flags failed")
endif()
execute_process(COMMAND ${BINARY} RESULT_VARIABLE code)
if(code)
  message(FATAL_ERROR "${BINARY} exited with ${code}")
endif()
