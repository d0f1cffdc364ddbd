// base/asio: the one way to include Boost.Asio in xmig (and the name xmig::asio).
//
// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>;
// g++ 12 rejects that, so <utility> must come first. Every file that uses Asio
// includes this header instead of Boost's.
#pragma once

#include <utility>

#include <boost/asio.hpp>

namespace xmig {
namespace asio = boost::asio;
}
