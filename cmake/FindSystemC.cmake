# Finds SystemC 2.3.x (Debian ships only pkg-config's systemc.pc, no CMake config) and makes the imported
# target SystemC::systemc. The Debian library is built as C++17; C++20 code links only when
# SC_CPLUSPLUS=201703L is defined on every target that includes SystemC headers (set here, INTERFACE).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_SYSTEMC QUIET systemc)
endif()
find_path(SystemC_INCLUDE_DIR NAMES systemc.h HINTS ${PC_SYSTEMC_INCLUDE_DIRS} $ENV{SYSTEMC_HOME}/include)
find_library(SystemC_LIBRARY NAMES systemc HINTS ${PC_SYSTEMC_LIBRARY_DIRS} $ENV{SYSTEMC_HOME}/lib
             $ENV{SYSTEMC_HOME}/lib-linux64)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(SystemC REQUIRED_VARS SystemC_LIBRARY SystemC_INCLUDE_DIR)
if(SystemC_FOUND AND NOT TARGET SystemC::systemc)
  add_library(SystemC::systemc UNKNOWN IMPORTED)
  set_target_properties(SystemC::systemc PROPERTIES
    IMPORTED_LOCATION "${SystemC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${SystemC_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS "SC_CPLUSPLUS=201703L;SC_INCLUDE_DYNAMIC_PROCESSES")
  find_package(Threads REQUIRED)
  set_property(TARGET SystemC::systemc APPEND PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
mark_as_advanced(SystemC_INCLUDE_DIR SystemC_LIBRARY)
