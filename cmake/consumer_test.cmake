# consumer_test.cmake: does minitrain work as a dependency of another CMake project?
# Run by CTest (tests consumer_package and consumer_subdirectory) as `cmake -P`:
#
#   MODE=package       `cmake --install` this build into WORK_DIR/prefix, then configure tests/consumer
#                      with find_package(minitrain) against that prefix only;
#   MODE=subdirectory  configure tests/consumer with add_subdirectory(<minitrain source>).
#
# Then build the consumer and run its programs. Everything is local: nothing is downloaded.
# Inputs (-D): MODE, MINITRAIN_SOURCE_DIR, MINITRAIN_BINARY_DIR, WORK_DIR, CONFIG, GENERATOR,
# CXX_COMPILER, EXPECT_CUDA, CUDA_COMPILER, CUDA_ARCHITECTURES (comma-separated), EXPECT_MPI.
cmake_minimum_required(VERSION 3.25)

foreach(var MODE MINITRAIN_SOURCE_DIR MINITRAIN_BINARY_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "consumer_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

function(run what)
  message(STATUS "consumer (${MODE}): ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "consumer (${MODE}): ${what} failed (exit ${rc}):\n  ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)

set(args -G ${GENERATOR} -DCMAKE_BUILD_TYPE=${CONFIG} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
         -DEXPECT_CUDA=${EXPECT_CUDA} -DEXPECT_MPI=${EXPECT_MPI})
if(MODE STREQUAL "package")
  run("install the build into ${prefix}"
      ${CMAKE_COMMAND} --install ${MINITRAIN_BINARY_DIR} --prefix ${prefix} --config ${CONFIG})
  # Only the scratch prefix may provide minitrain: no user or system package registry.
  list(APPEND args -DCMAKE_PREFIX_PATH=${prefix} -DEXPECT_MINITRAIN_PREFIX=${prefix}
                   -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "subdirectory")
  list(APPEND args -DMINITRAIN_SOURCE_DIR=${MINITRAIN_SOURCE_DIR})
  if(EXPECT_CUDA)
    list(APPEND args -DMINITRAIN_CUDA=ON)
    if(CUDA_COMPILER)
      list(APPEND args -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER})
    endif()
    if(CUDA_ARCHITECTURES)  # "80,90": passed by environment, a ;-list cannot be one command argument
      string(REPLACE "," ";" archs "${CUDA_ARCHITECTURES}")
      set(ENV{CUDAARCHS} "${archs}")
    endif()
  else()
    list(APPEND args -DMINITRAIN_CUDA=OFF)
  endif()
  if(EXPECT_MPI)
    list(APPEND args -DMINITRAIN_MPI=ON)
  else()
    list(APPEND args -DMINITRAIN_MPI=OFF)
  endif()
else()
  message(FATAL_ERROR "consumer_test.cmake: MODE must be package or subdirectory, got '${MODE}'")
endif()

run("configure" ${CMAKE_COMMAND} -S ${MINITRAIN_SOURCE_DIR}/tests/consumer -B ${build} ${args})
run("build" ${CMAKE_COMMAND} --build ${build} --config ${CONFIG} --parallel 2)
run("run app" ${CMAKE_COMMAND} -E chdir ${build} ${build}/app)
if(EXPECT_CUDA)
  run("run app_cuda" ${CMAKE_COMMAND} -E chdir ${build} ${build}/app_cuda)
endif()
if(EXPECT_MPI)
  run("run app_mpi" ${CMAKE_COMMAND} -E chdir ${build} ${build}/app_mpi)
endif()
