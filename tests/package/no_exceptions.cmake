# Builds and runs tests/package/no_exceptions against the installed qx; passes when the program's error
# handler received conv2d's message — the one the exception carries in builds with exceptions (the same
# text is checked against the exception in tests/ops/test_gradcheck.cpp) — and the program exited with 3.
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BUILD} -DCMAKE_PREFIX_PATH=${PREFIX} -DCMAKE_BUILD_TYPE=Release
                RESULT_VARIABLE configured)
if(NOT configured EQUAL 0)
  message(FATAL_ERROR "no_exceptions: configuring the consumer failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD} RESULT_VARIABLE built)
if(NOT built EQUAL 0)
  message(FATAL_ERROR "no_exceptions: building the consumer with -fno-exceptions failed")
endif()
execute_process(COMMAND ${BUILD}/qx_no_exceptions RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "${out}${err}")
set(expected "handler: conv2d: input (1, 3, 8, 8) has 3 channels but weight (4, 2, 3, 3) expects 2")
string(FIND "${out}" "${expected}" at)
if(NOT code EQUAL 3 OR at EQUAL -1)
  message(FATAL_ERROR "no_exceptions: expected exit code 3 and '${expected}', got ${code}")
endif()
