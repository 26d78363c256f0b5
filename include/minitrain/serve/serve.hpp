// minitrain/serve/serve.hpp
// What the OpenAI-compatible server (examples/serve.cpp) needs besides its HTTP library: OpenAI's request
// and response format (protocol.hpp), a request's generation a token at a time with stop sequences and
// penalties (sequence.hpp), the scheduler that interleaves the requests in flight (engine.hpp), and the
// chat page (chat_page.hpp). Not part of minitrain.hpp: include it where you serve.
#pragma once

#include "chat_page.hpp"
#include "engine.hpp"
#include "protocol.hpp"
#include "sequence.hpp"
