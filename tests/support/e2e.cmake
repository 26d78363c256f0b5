# tests/support/e2e.cmake: what the end-to-end CMake scripts (examples_e2e, pipeline_e2e) share.
# Include it after setting WORK_DIR.

# run(<name> <expected exit status> <command...>): runs in WORK_DIR; stdout in OUT, stderr in ERR.
function(run name expect)
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  string(TIMESTAMP t1 "%s")
  math(EXPR dt "${t1} - ${t0}")
  string(REPLACE ";" " " cmd "${ARGN}")
  if(NOT "${rc}" STREQUAL "${expect}")
    message(FATAL_ERROR "${name}: exit status ${rc}, expected ${expect}\n  command: ${cmd}\n"
                        "--- stdout\n${out}--- stderr\n${err}")
  endif()
  message(STATUS "${name}: exit ${rc} as expected (${dt} s)")
  set(OUT "${out}" PARENT_SCOPE)
  set(ERR "${err}" PARENT_SCOPE)
endfunction()

# expect(<name> <text> <regex>...): every regex must match the text.
function(expect name text)
  foreach(re ${ARGN})
    if(NOT text MATCHES "${re}")
      message(FATAL_ERROR "${name}: expected a match for '${re}' in:\n${text}")
    endif()
  endforeach()
endfunction()
