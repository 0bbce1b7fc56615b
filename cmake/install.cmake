# cmake/install.cmake — libinfl.so (versioned, exporting only include/infl.h's functions),
# and what `cmake --install build --prefix P` puts under P: lib/libinfl.so.0.1.0 (+ the
# libinfl.so.0 and libinfl.so links), lib/libinfl.a, include/infl.h (the only header),
# bin/infl, lib/pkgconfig/infl.pc and the CMake package lib/cmake/infl (infl::infl, the
# shared library; infl::infl_static). Also the tests of the installed tree
# (tests/install_test.sh) and of the Python package (python/tests). Included by the top
# CMakeLists after the library and the CLI are defined.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# ---- the shared library, from infl_core's objects ----
add_library(infl_shared SHARED)
target_link_libraries(infl_shared PRIVATE infl_obj)
target_include_directories(infl_shared INTERFACE
  $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
set_target_properties(infl_shared PROPERTIES OUTPUT_NAME infl EXPORT_NAME infl
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
# Every dependency named (a missing one fails here, not in a consumer's link); the static
# archives linked in (the CUDA backend) keep their symbols inside.
target_link_options(infl_shared PRIVATE LINKER:--exclude-libs,ALL)
if(NOT INFL_SANITIZE)
  target_link_options(infl_shared PRIVATE LINKER:--no-undefined)
endif()

# ---- what a program linking the static library needs after it (infl.pc's Libs.private,
# infl::infl_static): the libraries infl_obj links, by path ----
if(INFL_OPENBLAS_OMP)
  set(INFL_STATIC_BLAS ${INFL_OPENBLAS_OMP})
else()
  set(INFL_STATIC_BLAS ${OPENBLAS_LINK_LIBRARIES})
endif()
set(INFL_STATIC_DEPS ${HDF5_C_LIBRARIES} ${INFL_STATIC_BLAS} ${LAPACKE_LINK_LIBRARIES} ${ZLIB_LIBRARIES}
  ${GD_LINK_LIBRARIES} ${OpenMP_C_LIBRARIES})
if(INFL_HAVE_CUDA)
  # the CUDA backend is a second archive (libinfl_cuda.a, installed beside libinfl.a:
  # named first by infl.pc and inflConfig.cmake) with its C++ runtime
  list(APPEND INFL_STATIC_DEPS ${CUDA_cudart_LIBRARY} ${CUDA_cublas_LIBRARY} ${CUDA_cusolver_LIBRARY} stdc++)
endif()
list(APPEND INFL_STATIC_DEPS ${CMAKE_THREAD_LIBS_INIT} m)
list(REMOVE_DUPLICATES INFL_STATIC_DEPS)
# pkg-config: a path as it is, a bare name as -lNAME
set(INFL_PC_LIBS_PRIVATE "")
set(INFL_CONFIG_CUDA_ARCHIVE "")
if(INFL_HAVE_CUDA)
  set(INFL_PC_LIBS_PRIVATE "\${libdir}/libinfl_cuda.a")
  set(INFL_CONFIG_CUDA_ARCHIVE "libinfl_cuda.a")
endif()
foreach(lib ${INFL_STATIC_DEPS})
  if(lib MATCHES "^(/|-)")
    string(APPEND INFL_PC_LIBS_PRIVATE " ${lib}")
  else()
    string(APPEND INFL_PC_LIBS_PRIVATE " -l${lib}")
  endif()
endforeach()
string(STRIP "${INFL_PC_LIBS_PRIVATE}" INFL_PC_LIBS_PRIVATE)

# ---- install ----
install(TARGETS infl_shared EXPORT inflTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES $<TARGET_FILE:infl_core> DESTINATION ${CMAKE_INSTALL_LIBDIR} RENAME libinfl.a)
if(INFL_HAVE_CUDA)
  install(FILES $<TARGET_FILE:infl_cuda> DESTINATION ${CMAKE_INSTALL_LIBDIR} RENAME libinfl_cuda.a)
endif()
install(FILES ${CMAKE_SOURCE_DIR}/include/infl.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# the CLI links the static library (no libinfl.so needed at run time); its RPATH is
# CMAKE_INSTALL_RPATH, OpenBLAS's OpenMP build, like the shared library's
install(TARGETS infl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# pkg-config, relocatable: the prefix is found from the .pc file's own folder
file(RELATIVE_PATH INFL_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" INFL_PC_TO_PREFIX "${INFL_PC_TO_PREFIX}")
configure_file(${CMAKE_SOURCE_DIR}/cmake/infl.pc.in ${CMAKE_BINARY_DIR}/generated/infl.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/generated/infl.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# CMake package: find_package(infl) gives infl::infl and infl::infl_static
set(INFL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/infl)
install(EXPORT inflTargets NAMESPACE infl:: DESTINATION ${INFL_CMAKE_DIR})
set(INFL_CONFIG_LIBDIR ${CMAKE_INSTALL_LIBDIR})
set(INFL_CONFIG_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR})
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/inflConfig.cmake.in
  ${CMAKE_BINARY_DIR}/generated/inflConfig.cmake INSTALL_DESTINATION ${INFL_CMAKE_DIR}
  PATH_VARS INFL_CONFIG_LIBDIR INFL_CONFIG_INCLUDEDIR)
# 0.x: a minor version may change the ABI (the SONAME is libinfl.so.0 for all of 0.x,
# but the Python package and infl.h's structs are checked per minor version)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/generated/inflConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/generated/inflConfig.cmake
  ${CMAKE_BINARY_DIR}/generated/inflConfigVersion.cmake DESTINATION ${INFL_CMAKE_DIR})

# ---- tests: the installed tree, both ways; the Python package over the built libinfl.so ----
if(INFL_TESTS)
  enable_testing()
  add_test(NAME install_test COMMAND bash ${CMAKE_SOURCE_DIR}/tests/install_test.sh
    ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR})
  set_tests_properties(install_test PROPERTIES TIMEOUT 300
    ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;INFL_SANITIZE=${INFL_SANITIZE}")
  add_test(NAME python_test COMMAND bash ${CMAKE_SOURCE_DIR}/python/tests/run.sh
    $<TARGET_FILE:infl_shared> $<TARGET_FILE:infl> ${CMAKE_SOURCE_DIR})
  set_tests_properties(python_test PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
    ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1;INFL_SANITIZE=${INFL_SANITIZE}")
endif()
