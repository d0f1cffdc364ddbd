// toml++'s issue #295 (Debian 12's 3.3.0): a code point such as U+032A
// reached TOML_UNREACHABLE inside the parser. cmake/tomlplusplus.cmake builds
// against a copy with upstream's fix (PR #305); these tests hold it there.
#include <gtest/gtest.h>
#include <toml++/toml.h>

#include <string>

#include "tunnel/config.hpp"

namespace xmig::tunnel {
namespace {

// Evaluated by the compiler: with the defect, the call reaches
// __builtin_unreachable and is not a constant expression, so this file does
// not compile.
static_assert(!toml::impl::is_non_ascii_horizontal_whitespace(U'\u032A'));
static_assert(!toml::impl::is_non_ascii_horizontal_whitespace(U'\u03EA'));
static_assert(toml::impl::is_non_ascii_horizontal_whitespace(U'\u3000'));

// Pass: the inputs of upstream's issue #295, and the same code points where a
// config file could hold them (a bare value, after a multi-line string's
// backslash), are refused as a TOML syntax error naming the file and line;
// under -fsanitize=undefined (tools/test's sanitizer run) reaching the
// unreachable would abort the test instead.
TEST(Toml, Issue295CodePointsAreSyntaxErrorsNotUndefinedBehaviour) {
  for (std::string text :
       {"\xcc\xaa", "\xcf\xaa", "name = \xcc\xaa\n", "name = \"\"\"\\\xcc\xaa\"\"\"\n"}) {
    try {
      parse_config(text, "tunnel.toml");
      ADD_FAILURE() << "parsed: " << text;
    } catch (const ConfigError& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("tunnel.toml: line 1"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace xmig::tunnel
