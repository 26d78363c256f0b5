# mpirun_test.cmake: run tests/dist/collectives.cpp under mpirun and judge the job as a whole.
# Run by CTest as `cmake -P` (tests dist_<mode>_np<N>, see CMakeLists.txt) with
#   -DMPIEXEC=<mpirun> -DNP=<ranks> -DPROGRAM=<test_dist_collectives> -DMODE=<mode> -DEXPECT=<regex>
# Passing modes (collectives, config_match, user_init) must exit 0 and print EXPECT; the others must end the whole
# job with a non-zero status, EXPECT in the output, and within TIMEOUT seconds (default 45): a hang fails.
cmake_minimum_required(VERSION 3.25)
foreach(var MPIEXEC NP PROGRAM MODE)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "mpirun_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT TIMEOUT)
  set(TIMEOUT 45)
endif()

# OpenMPI refuses to run as root and to start more ranks than cores unless told; other MPIs lack the flags.
set(flags)
execute_process(COMMAND ${MPIEXEC} --version OUTPUT_VARIABLE version ERROR_VARIABLE version)
if(version MATCHES "Open MPI|OpenRTE")
  set(flags --oversubscribe --allow-run-as-root)
endif()

set(cmd ${MPIEXEC} ${flags} -np ${NP} ${PROGRAM} ${MODE})
string(REPLACE ";" " " cmd_text "${cmd}")
message(STATUS "${cmd_text}")
string(TIMESTAMP t0 "%s")
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${TIMEOUT})
string(TIMESTAMP t1 "%s")
math(EXPR seconds "${t1} - ${t0}")
message(STATUS "exit status: ${rc}, ${seconds} s\n---- stdout\n${out}---- stderr\n${err}----")

if(MODE MATCHES "^(collectives|config_match|user_init|equivalence|zero3)$")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "FAIL: the job exited with '${rc}', expected 0")
  endif()
else()
  if(rc MATCHES "timeout")
    message(FATAL_ERROR "FAIL: the job did not end within ${TIMEOUT} s (a hang)")
  elseif(rc EQUAL 0)
    message(FATAL_ERROR "FAIL: the job exited with 0, expected a failure")
  endif()
endif()
if(EXPECT AND NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "FAIL: the output does not contain '${EXPECT}'")
endif()
message(STATUS "ok: ${MODE} with ${NP} ranks")
