# tests/gguf/npm_ci.cmake: installs node-llama-cpp (pinned by tests/gguf/package-lock.json) into
# tests/gguf/node_modules with `npm ci --omit=optional`, unless it is already there. Offline, or without
# the registry, the install fails and the test reports "[skipped]" with the reason instead.
# Run by CTest (gguf_npm_setup) as: cmake -DNPM=<npm> -DDIR=<tests/gguf> -P npm_ci.cmake
set(stamp "${DIR}/node_modules/.package-lock.json")  # npm writes it when an install completes
if(EXISTS "${stamp}" AND EXISTS "${DIR}/node_modules/@node-llama-cpp/linux-x64/package.json"
   AND NOT "${DIR}/package-lock.json" IS_NEWER_THAN "${stamp}")
  message(STATUS "gguf_npm_setup: node_modules is up to date with package-lock.json")
  return()
endif()
# --omit=optional: only the linux-x64 CPU binary (a direct dependency), not every platform's and GPU's;
# --ignore-scripts: node-llama-cpp's postinstall would look for a GPU build; the tests use the prebuilt CPU one.
execute_process(COMMAND "${NPM}" ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
                WORKING_DIRECTORY "${DIR}" RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message("[skipped] 'npm ci' in ${DIR} failed (exit ${rc}; it needs the npm registry): ${err}")
endif()
