# Configures the project with DUPLEX_CUDA=OFF in a scratch folder and builds only duplex_kernels: the CPU-only
# build of the kernels must keep working on machines without the CUDA toolkit.
# Usage: cmake -DSOURCE_DIR=<repo> -DBINARY_DIR=<scratch> -P build_without_cuda.cmake
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR} -G Ninja -DDUPLEX_CUDA=OFF -DDUPLEX_BUILD_TESTS=OFF
          -DDUPLEX_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Release
  RESULT_VARIABLE configure_result OUTPUT_VARIABLE configure_output ERROR_VARIABLE configure_output)
if(NOT configure_result EQUAL 0)
  message(FATAL_ERROR "configure with DUPLEX_CUDA=OFF failed:\n${configure_output}")
endif()
if(NOT configure_output MATCHES "duplex: CUDA kernels OFF")
  message(FATAL_ERROR "DUPLEX_CUDA=OFF did not turn the CUDA kernels off:\n${configure_output}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} --target duplex_kernels -j 2
                RESULT_VARIABLE build_result OUTPUT_VARIABLE build_output ERROR_VARIABLE build_output)
if(NOT build_result EQUAL 0)
  message(FATAL_ERROR "building duplex_kernels with DUPLEX_CUDA=OFF failed:\n${build_output}")
endif()
if(build_output MATCHES "nvcc|\\.cu\\.o")
  message(FATAL_ERROR "the DUPLEX_CUDA=OFF build compiled CUDA sources:\n${build_output}")
endif()
message(STATUS "duplex_kernels builds with DUPLEX_CUDA=OFF")
