// A user of one header, as a tool includes it: the border probe
// (tests/borders/probe.sh) compiles this once per header it names.
#include XMIG_PROBE_HEADER
