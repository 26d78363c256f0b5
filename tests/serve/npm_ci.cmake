# tests/serve/npm_ci.cmake: `npm ci` in tests/serve unless node_modules already holds what
# package-lock.json pins (npm writes node_modules/.package-lock.json when it installs).
# Run by CTest (serve_npm) as: cmake -DNPM=<npm> -DDIR=<tests/serve> -P npm_ci.cmake
set(stamp "${DIR}/node_modules/.package-lock.json")
if(EXISTS "${stamp}" AND NOT "${DIR}/package-lock.json" IS_NEWER_THAN "${stamp}")
  message(STATUS "serve_npm: node_modules is up to date with package-lock.json")
  return()
endif()
execute_process(COMMAND "${NPM}" ci --no-audit --no-fund --loglevel=error WORKING_DIRECTORY "${DIR}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "serve_npm: 'npm ci' in ${DIR} failed (exit ${rc}); it needs the npm registry")
endif()
