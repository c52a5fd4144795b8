#include "efsign/communicator.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "efsign/checksum.h"
#include "efsign/error.h"

namespace efsign {

void SelfCommunicator::allgather(Span<const std::byte> send, Span<std::byte> recv) {
  if (recv.size() != send.size()) throw Error("allgather: recv must hold size() * send bytes");
  if (!send.empty()) std::memcpy(recv.data(), send.data(), send.size());
  count(static_cast<int64_t>(send.size()), 0);
}
void SelfCommunicator::allreduce_sum(Span<float> data) { count(static_cast<int64_t>(data.size_bytes()), 0); }
void SelfCommunicator::allreduce_sum(Span<double>) {}
void SelfCommunicator::alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_alltoallv(send, counts, recv);
  if (!send.empty()) std::memcpy(recv.data(), send.data(), send.size());
}
void SelfCommunicator::allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_allgatherv(send, counts, recv);
  if (!send.empty()) std::memcpy(recv.data(), send.data(), send.size());
}

void Communicator::check_and_count_alltoallv(Span<const std::byte> send, Span<const int64_t> counts,
                                             Span<std::byte> recv) {
  if (static_cast<int>(counts.size()) != size())
    throw Error(fmt::format("alltoallv: {} counts for {} ranks", counts.size(), size()));
  int64_t total = 0, wire = 0;
  for (int c = 0; c < size(); ++c) {
    if (counts[c] < 0) throw Error("alltoallv: negative count");
    total += counts[c];
    if (c != rank()) wire += counts[c];
  }
  if (static_cast<int64_t>(send.size()) != total)
    throw Error(fmt::format("alltoallv: send holds {} bytes, the counts add up to {}", send.size(), total));
  if (static_cast<int64_t>(recv.size()) != counts[rank()] * size())
    throw Error(fmt::format("alltoallv: recv holds {} bytes, need {} x {}", recv.size(), size(), counts[rank()]));
  count(total, wire);
}

void Communicator::check_and_count_allgatherv(Span<const std::byte> send, Span<const int64_t> counts,
                                              Span<std::byte> recv) {
  if (static_cast<int>(counts.size()) != size())
    throw Error(fmt::format("allgatherv: {} counts for {} ranks", counts.size(), size()));
  int64_t total = 0;
  for (int c = 0; c < size(); ++c) {
    if (counts[c] < 0) throw Error("allgatherv: negative count");
    total += counts[c];
  }
  if (static_cast<int64_t>(send.size()) != counts[rank()])
    throw Error(fmt::format("allgatherv: send holds {} bytes, counts say {}", send.size(), counts[rank()]));
  if (static_cast<int64_t>(recv.size()) != total)
    throw Error(fmt::format("allgatherv: recv holds {} bytes, the counts add up to {}", recv.size(), total));
  count(static_cast<int64_t>(send.size()), ring_allgather_wire_bytes(static_cast<int64_t>(send.size()), size()));
}

namespace {
thread_local bool t_polite_waits = false;
}
void set_polite_waits(bool on) { t_polite_waits = on; }
bool polite_waits() { return t_polite_waits; }

void agree_or_throw(HostCommunicator& comm, uint64_t value, const std::string& what) {
  std::vector<uint64_t> all(comm.size());
  comm.allgather(as_bytes(Span<const uint64_t>(&value, 1)), as_writable_bytes(Span<uint64_t>(all)));
  std::string diff;
  for (int r = 0; r < comm.size(); ++r)
    if (all[r] != all[0]) diff += fmt::format(" rank {} has {} (rank 0 has {});", r, hex64(all[r]), hex64(all[0]));
  if (!diff.empty())
    throw AgreedError(fmt::format("ranks disagree on {}:{} every rank must run the same configuration", what, diff));
}

std::string first_error(HostCommunicator& comm, const std::string& mine) {
  constexpr std::size_t kMax = 1024;
  std::vector<char> send(kMax, '\0'), all(kMax * comm.size());
  std::memcpy(send.data(), mine.data(), std::min(mine.size(), kMax - 1));
  comm.allgather(Span<const std::byte>(reinterpret_cast<const std::byte*>(send.data()), kMax),
                 Span<std::byte>(reinterpret_cast<std::byte*>(all.data()), all.size()));
  for (int r = 0; r < comm.size(); ++r) {
    const char* m = all.data() + r * kMax;
    if (m[0] != '\0') return r == 0 ? std::string(m) : fmt::format("rank {}: {}", r, m);
  }
  return "";
}


}  // namespace efsign
