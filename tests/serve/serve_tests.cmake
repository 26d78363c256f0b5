# tests/serve/serve_tests.cmake: the server end to end (included by CMakeLists.txt when tests and
# examples are built).
#
#   serve_model   test_serve trains a tiny chat model (SFT, seconds) into serve-e2e/model   (fixture)
#   serve_npm     npm ci in tests/serve (the openai client and playwright-core, pinned by
#                 package-lock.json; skipped when node_modules already matches the lock file) (fixture)
#   serve_api     tests/serve/api.test.mjs: build/serve on 127.0.0.1 talked to with the openai client and
#                 curl (streaming, equality with `chat --prompts`, stops, concurrency, disconnects,
#                 malformed requests, SIGTERM)
#   serve_page    tests/serve/page.test.mjs: the chat page in headless Chromium; writes
#                 serve-e2e/chat-page.png
#
# Each reports "[skipped] <reason>" (CTest: Skipped) when serve was not built (no cpp-httplib), or node,
# npm, curl or /usr/bin/chromium is missing. cmake/setup.sh installs all of them.
find_program(MT_NODE node)
find_program(MT_NPM npm)
find_program(MT_CURL curl)
set(mt_serve_dir ${PROJECT_BINARY_DIR}/serve-e2e)
set(mt_serve_skip "")
if(NOT TARGET serve)
  set(mt_serve_skip "serve was not built: cpp-httplib not found (Debian: apt-get install libcpp-httplib-dev)")
elseif(NOT MT_NODE OR NOT MT_NPM)
  set(mt_serve_skip "node and npm are needed (Debian: apt-get install nodejs npm)")
elseif(NOT MT_CURL)
  set(mt_serve_skip "curl is needed (Debian: apt-get install curl)")
endif()

if(mt_serve_skip)
  foreach(t serve_api serve_page)
    add_test(NAME ${t} COMMAND ${CMAKE_COMMAND} -E echo "[skipped] ${mt_serve_skip}")
    set_tests_properties(${t} PROPERTIES SKIP_REGULAR_EXPRESSION "\\[skipped\\]")
  endforeach()
  return()
endif()

add_test(NAME serve_model COMMAND test_serve "--test-case=serve: a tiny chat model for the server tests")
set_tests_properties(serve_model PROPERTIES FIXTURES_SETUP serve_model TIMEOUT 120
  ENVIRONMENT "MINITRAIN_SERVE_MODEL_DIR=${mt_serve_dir}/model;OMP_WAIT_POLICY=PASSIVE")
add_test(NAME serve_npm COMMAND ${CMAKE_COMMAND} -DNPM=${MT_NPM} -DDIR=${PROJECT_SOURCE_DIR}/tests/serve
                                -P ${PROJECT_SOURCE_DIR}/tests/serve/npm_ci.cmake)
set_tests_properties(serve_npm PROPERTIES FIXTURES_SETUP serve_npm TIMEOUT 300)

set(mt_serve_env "SERVE=$<TARGET_FILE:serve>" "CHAT=$<TARGET_FILE:chat>" "MODEL_DIR=${mt_serve_dir}/model"
                 "WORK_DIR=${mt_serve_dir}" "CURL=${MT_CURL}" "OMP_WAIT_POLICY=PASSIVE" "OMP_NUM_THREADS=1")
add_test(NAME serve_api COMMAND ${MT_NODE} --test --test-reporter=spec ${PROJECT_SOURCE_DIR}/tests/serve/api.test.mjs)
add_test(NAME serve_page COMMAND ${MT_NODE} --test --test-reporter=spec ${PROJECT_SOURCE_DIR}/tests/serve/page.test.mjs)
foreach(t serve_api serve_page)
  set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED "serve_model;serve_npm" TIMEOUT 180
    ENVIRONMENT "${mt_serve_env}" SKIP_REGULAR_EXPRESSION "\\[skipped\\]")
endforeach()
