// How the tunnel's log lines look: text (the default, for people and
// journald) or JSON (log_format = "json": one object per line, for machines).
//
// The lines the tunnel writes follow one grammar, `<event>: <details>`, with
// details either `key=value` pairs (ready, close: values with spaces are
// "quoted") or words naming who and what, then `: <reason>` (refused). A JSON
// line carries what a reader needs without parsing that text:
//   {"time":"2026-12-02T03:38:12.123Z","level":"info","event":"close",
//    "dir":"out","peer":"hv-b",...,"message":"close: dir=out peer=hv-b ..."}
// - time: UTC, milliseconds; level: spdlog's name (info, warning, error, ...);
// - event: the line's first words before ':' or ' (' (close, refused, ready,
//   reload, ban, ban lifted, migration, drain, ...); "log" for a line that
//   has none;
// - every key=value of the line as a string field (e.g. close's dir, peer,
//   channel, tls, cipher, mode, to_peer, from_peer, result, error); for
//   "refused", the who-and-what words as fields (entry, from, peer, channel,
//   migration, intercept) and the text after them as "reason"; for "reload",
//   why it happened as "why";
// - message: the whole text line, always, so nothing is lost.
// A field never replaces time, level, event or message.
#pragma once

#include <spdlog/formatter.h>

#include <memory>
#include <string>
#include <string_view>

namespace xmig::tunnel {

// One log line as a JSON object (no newline). Pure, for tests and fuzzing.
std::string json_log_line(std::string_view time, std::string_view level, std::string_view text);

// A spdlog formatter that writes json_log_line for every message.
std::unique_ptr<spdlog::formatter> json_log_formatter();

}  // namespace xmig::tunnel
