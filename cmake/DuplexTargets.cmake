# Helpers every folder uses: strict warnings for our own code (third-party headers stay SYSTEM includes),
# and test registration with CTest labels (unit, golden, crosscheck, functional, gpu, slow).

function(duplex_strict_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
      -Wnon-virtual-dtor -Woverloaded-virtual>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${DUPLEX_WERROR}>>:-Werror>)
endfunction()

# duplex_add_library(name SOURCES ... [DEPS ...] [PUBLIC_DEPS ...])
function(duplex_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_DEPS})
  target_compile_features(${name} PUBLIC cxx_std_20)
  duplex_strict_warnings(${name})
endfunction()

# duplex_add_test(name SOURCES ... LABELS unit|golden|... [DEPS ...] [SYSTEMC] [NO_DISCOVER])
# SYSTEMC: the test defines sc_main and links gtest without gtest_main (TOOLCHAIN.md).
function(duplex_add_test name)
  cmake_parse_arguments(ARG "SYSTEMC;NO_DISCOVER" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  if(ARG_SYSTEMC)
    target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock SystemC::systemc)
  else()
    target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  endif()
  duplex_strict_warnings(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if(ARG_NO_DISCOVER)
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
      ENVIRONMENT "SYSTEMC_DISABLE_COPYRIGHT_MESSAGE=1")
  else()
    # gtest_discover_tests writes PROPERTIES into a script as separate words, so a list value (several
    # labels, several environment entries) would be split into bogus property names: one of each only.
    list(LENGTH ARG_LABELS n_labels)
    if(n_labels GREATER 1)
      message(FATAL_ERROR "${name}: a discovered test takes one label; use NO_DISCOVER for several")
    endif()
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
      ENVIRONMENT "SYSTEMC_DISABLE_COPYRIGHT_MESSAGE=1")
  endif()
endfunction()
