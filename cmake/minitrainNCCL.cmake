# minitrainNCCL.cmake
# Finds NCCL (the multi-GPU collectives library) and makes the imported target minitrain::nccl.
# Used both by minitrain's own build and by the installed minitrainConfig.cmake, so that a program
# linking minitrain::cuda finds the same library the package was configured with.
#
# NCCL ships no CMake package. It is looked for under NCCL_ROOT, beside the CUDA toolkit (the
# toolkit's lib64/ and include/: CUDAToolkit must be found first), then in the system paths.

include_guard(GLOBAL)

# minitrain_find_nccl(<found-var>): sets <found-var> to ON and defines minitrain::nccl when found.
function(minitrain_find_nccl found_var)
  if(TARGET minitrain::nccl)
    set(${found_var} ON PARENT_SCOPE)
    return()
  endif()
  set(hints)
  if(DEFINED NCCL_ROOT)
    list(APPEND hints ${NCCL_ROOT})
  endif()
  if(DEFINED ENV{NCCL_ROOT})
    list(APPEND hints $ENV{NCCL_ROOT})
  endif()
  if(CUDAToolkit_LIBRARY_ROOT)
    list(APPEND hints ${CUDAToolkit_LIBRARY_ROOT})
  endif()
  find_library(MINITRAIN_NCCL_LIBRARY NAMES nccl
    HINTS ${hints} ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib64 lib)
  find_path(MINITRAIN_NCCL_INCLUDE_DIR NAMES nccl.h
    HINTS ${hints} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  mark_as_advanced(MINITRAIN_NCCL_LIBRARY MINITRAIN_NCCL_INCLUDE_DIR)
  if(MINITRAIN_NCCL_LIBRARY AND MINITRAIN_NCCL_INCLUDE_DIR)
    add_library(minitrain::nccl UNKNOWN IMPORTED GLOBAL)
    set_target_properties(minitrain::nccl PROPERTIES
      IMPORTED_LOCATION "${MINITRAIN_NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${MINITRAIN_NCCL_INCLUDE_DIR}")
    set(${found_var} ON PARENT_SCOPE)
  else()
    set(${found_var} OFF PARENT_SCOPE)
  endif()
endfunction()
