// harness/credentials: who a running process is, read from
// /proc/<pid>/task/<tid>/status for every thread (capabilities and
// no_new_privs belong to each thread), and checked against whom it should
// be: the least-privilege tests of the tunnel (e2e, QEMU, transparent mode).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace xmig::harness {

// One thread's Uid, Gid, Groups, Cap* and NoNewPrivs lines, values trimmed
// (e.g. "Uid" -> "65534\t65534\t65534\t65534", "CapEff" -> "0000000000001000").
struct ThreadCredentials {
  std::string tid;
  std::map<std::string, std::string> lines;
};
std::vector<ThreadCredentials> thread_credentials(pid_t pid);

// Whom every thread must be: real, effective, saved and filesystem uid and
// gid; supplementary groups a subset of `groups`; CapEff, CapPrm and CapBnd
// exactly `capabilities`, CapInh and CapAmb empty; NoNewPrivs 1.
struct ExpectedCredentials {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups{};
  uint64_t capabilities = 0;
};

// The supplementary groups of account `user` (getgrouplist), for
// ExpectedCredentials::groups.
std::vector<gid_t> groups_of(const std::string& user, gid_t gid);

// What differs from `expected`, one line per thread and field ("" when every
// thread is as expected); also when there is no thread to read.
std::string credential_problems(pid_t pid, const ExpectedCredentials& expected);

// The first thread's lines as /proc shows them, for the test's output.
std::string describe_credentials(pid_t pid);

}  // namespace xmig::harness
