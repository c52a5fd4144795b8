# cmake/efsignDependencies.cmake — the imported targets efsign's own targets link that
# no package defines, made the same way in efsign's build (CMakeLists.txt) and in a
# project that finds the installed package (efsignConfig.cmake, which installs this file
# next to itself), so neither hard-codes a path:
#   efsign::libtorch  LibTorch as TorchConfig.cmake describes it (TORCH_LIBRARIES is a
#                     list of targets and library files, not one target): call after
#                     find_package(Torch).
#   efsign::nccl      libnccl and nccl.h (NCCL ships no CMake package).

include_guard(GLOBAL)

function(efsign_add_libtorch_target)
  if(TARGET efsign::libtorch)
    return()
  endif()
  add_library(efsign::libtorch INTERFACE IMPORTED)
  set_target_properties(efsign::libtorch PROPERTIES
    INTERFACE_LINK_LIBRARIES "${TORCH_LIBRARIES}"
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}")
endfunction()

# efsign_find_nccl(<found_var> [HINTS dir...]): looks in NCCL_HOME / NCCL_ROOT (CMake or
# environment variables), the nvidia-nccl wheel of this python3 (no __init__.py there:
# found by find_spec, never by importing), the given HINTS, then the CUDA toolkit (call
# after find_package(CUDAToolkit)). The wheel ships libnccl.so.2 only, hence the second
# name. On success makes efsign::nccl and sets NCCL_VERSION in the caller; <found_var>
# is TRUE or FALSE. NCCL_INCLUDE_DIR and NCCL_LIBRARY are cache entries: set them to
# choose by hand.
function(efsign_find_nccl found_var)
  cmake_parse_arguments(ARG "" "" "HINTS" ${ARGN})
  set(${found_var} FALSE PARENT_SCOPE)
  set(_hints ${NCCL_HOME} ${NCCL_ROOT} $ENV{NCCL_HOME} $ENV{NCCL_ROOT})
  find_program(EFSIGN_PYTHON3 NAMES python3)
  if(EFSIGN_PYTHON3)
    execute_process(COMMAND "${EFSIGN_PYTHON3}" -c
      "import importlib.util as u\ntry: s = u.find_spec('nvidia.nccl')\nexcept ImportError: s = None\nprint(list(s.submodule_search_locations)[0] if s else '')"
      OUTPUT_VARIABLE _wheel OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    list(APPEND _hints ${_wheel})
  endif()
  list(APPEND _hints ${ARG_HINTS})
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_hints} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_hints} ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib lib64)
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
    return()
  endif()
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _v REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) +[0-9]+")
  string(REGEX REPLACE ".*NCCL_MAJOR +([0-9]+).*NCCL_MINOR +([0-9]+).*NCCL_PATCH +([0-9]+).*" "\\1.\\2.\\3"
         _version "${_v}")
  if(NOT TARGET efsign::nccl)
    add_library(efsign::nccl SHARED IMPORTED)
    set_target_properties(efsign::nccl PROPERTIES
      IMPORTED_LOCATION "${NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
  endif()
  set(NCCL_VERSION "${_version}" PARENT_SCOPE)
  set(${found_var} TRUE PARENT_SCOPE)
endfunction()

# Makes every imported target created so far in the calling directory visible to the
# whole build. For efsign as a subproject (add_subdirectory): imported targets are
# directory-scoped, and the parent's targets that link efsign::efsign inherit links to
# torch, MPI::MPI_CXX, fmt::fmt, ... that the parent never found itself.
function(efsign_make_imported_targets_global)
  if(CMAKE_VERSION VERSION_LESS 3.21)
    message(FATAL_ERROR "efsign: add_subdirectory(efsign) needs CMake 3.21 or newer (this is ${CMAKE_VERSION}); "
                        "or install efsign and use find_package(efsign)")
  endif()
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_global ${_t} IMPORTED_GLOBAL)
    if(NOT _global)
      set_target_properties(${_t} PROPERTIES IMPORTED_GLOBAL TRUE)
    endif()
  endforeach()
endfunction()
