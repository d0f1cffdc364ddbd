// base/: the JSON string writer every folder's JSON goes through, and the
// OpenSSL error-queue text. Pass criteria open each test.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <string>

#include "base/json.hpp"
#include "base/openssl_errors.hpp"

namespace xmig {
namespace {

// Pass: quotes and backslashes are escaped, newline and tab have their short
// forms, other control characters are \u00XX, everything else is copied.
TEST(BaseJson, QuotesAndEscapesAStringLiteral) {
  EXPECT_EQ(json_quote(""), "\"\"");
  EXPECT_EQ(json_quote("hv-b"), "\"hv-b\"");
  EXPECT_EQ(json_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(json_quote("line\nnext\ttab"), "\"line\\nnext\\ttab\"");
  EXPECT_EQ(json_quote(std::string("\x01\x1f", 2)), "\"\\u0001\\u001f\"");
  EXPECT_EQ(json_quote(std::string("nul\0here", 8)), "\"nul\\u0000here\"");
}

// Pass: UTF-8 stays as it is by default; NonAscii::Escape writes every byte
// from 0x7f up as \u00XX, so the output is ASCII whatever came in.
TEST(BaseJson, NonAsciiIsKeptOrEscaped) {
  EXPECT_EQ(json_quote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(json_quote("caf\xc3\xa9", NonAscii::Escape), "\"caf\\u00c3\\u00a9\"");
  EXPECT_EQ(json_quote("\x7f", NonAscii::Escape), "\"\\u007f\"");
  EXPECT_EQ(json_quote("plain", NonAscii::Escape), "\"plain\"");
}

// Pass: the queue's reasons come out once each, joined by "; ", and the
// queue is empty afterwards.
TEST(BaseOpensslErrors, ReasonsOnceAndQueueCleared) {
  ERR_clear_error();
  EXPECT_EQ(openssl_errors(), "");
  ERR_raise(ERR_LIB_EVP, EVP_R_BAD_DECRYPT);
  ERR_raise(ERR_LIB_EVP, EVP_R_BAD_DECRYPT);
  ERR_raise(ERR_LIB_EVP, EVP_R_UNSUPPORTED_CIPHER);
  EXPECT_EQ(openssl_errors(), "bad decrypt; unsupported cipher");
  EXPECT_EQ(ERR_peek_error(), 0u);
}

}  // namespace
}  // namespace xmig
