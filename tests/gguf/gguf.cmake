# tests/gguf/gguf.cmake: GGUF files run by a real llama.cpp (included by CMakeLists.txt when tests and
# examples are built).
#
#   gguf_reference   tests/gguf/reference.cpp: minitrain's tokens, greedy continuations and next-token
#                    probabilities for a model folder, as JSON (the test's oracle)
#   gguf_npm_setup   npm ci in tests/gguf: node-llama-cpp 3.21.1 and its prebuilt linux-x64 CPU llama.cpp,
#                    pinned by package-lock.json (skipped when node_modules already matches) (fixture)
#   gguf_llama_cpp   tests/gguf/llama_cpp_test.mjs: train tiny models, export f32 / f16 / bf16 GGUF, compare
#                    llama.cpp's tokens, greedy continuations and probabilities with minitrain's
#
# Reports "[skipped] <reason>" (CTest: Skipped) without node and npm, or when the package cannot be
# installed (no registry). cmake/setup.sh installs node and npm.
add_executable(gguf_reference ${PROJECT_SOURCE_DIR}/tests/gguf/reference.cpp)
target_link_libraries(gguf_reference PRIVATE minitrain::minitrain)
minitrain_own_program(gguf_reference)

find_program(MT_NODE node)
find_program(MT_NPM npm)
if(NOT MT_NODE OR NOT MT_NPM)
  add_test(NAME gguf_llama_cpp COMMAND ${CMAKE_COMMAND} -E echo
           "[skipped] node and npm are needed (Debian: apt-get install nodejs npm, or bash cmake/setup.sh)")
  set_tests_properties(gguf_llama_cpp PROPERTIES SKIP_REGULAR_EXPRESSION "\\[skipped\\]")
  return()
endif()

add_test(NAME gguf_npm_setup COMMAND ${CMAKE_COMMAND} -DNPM=${MT_NPM} -DDIR=${PROJECT_SOURCE_DIR}/tests/gguf
                                     -P ${PROJECT_SOURCE_DIR}/tests/gguf/npm_ci.cmake)
set_tests_properties(gguf_npm_setup PROPERTIES FIXTURES_SETUP gguf_npm TIMEOUT 300
                     SKIP_REGULAR_EXPRESSION "\\[skipped\\]")
set(mt_gguf_shared ${PROJECT_SOURCE_DIR}/../shared/data/minimind-tokenizers)
add_test(NAME gguf_llama_cpp COMMAND ${MT_NODE} ${PROJECT_SOURCE_DIR}/tests/gguf/llama_cpp_test.mjs
                                     --bin ${PROJECT_BINARY_DIR} --work ${PROJECT_BINARY_DIR}/gguf-e2e
                                     --shared ${mt_gguf_shared})
set_tests_properties(gguf_llama_cpp PROPERTIES FIXTURES_REQUIRED gguf_npm TIMEOUT ${MINITRAIN_TEST_TIMEOUT} SKIP_RETURN_CODE 77
                     ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")
