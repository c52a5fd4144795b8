#include "efsign/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign {

namespace {

using Clock = std::chrono::steady_clock;

// Note [MPI watchdog] (mpi_communicator.h).
constexpr double kListenAfterS = 0.2;  // a wait this long answers its peers' probes
constexpr double kProbeGraceS = 2.0;   // how long a timed-out rank waits for the answers
constexpr double kReportMarginS = 5.0;  // a deferring rank's allowance for the reporter's abort
constexpr int kProbeTag = 1, kReplyTag = 2;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// What a rank waits in, as probes and replies carry it (plain bytes, same binary on
// every rank).
struct WaitRecord {
  int64_t round = 0;   // probe: the prober's round; reply: the round it answers
  int64_t seq = 0;     // the collective's number on its communicator (1 = the first)
  double waited_s = 0;
  int32_t timed_out = 0;
  char what[20] = {};   // "allgather", ...
  char label[20] = {};  // the communicator: "control", "data", ...
};

void copy_name(char (&dst)[20], const std::string& src) {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, src.data(), std::min(src.size(), sizeof dst - 1));
}

// The process-wide side channel of the watchdog. MPI_THREAD_SERIALIZED: only one thread
// calls MPI at a time, and only that thread touches this state.
struct ProbeChannel {
  MPI_Comm comm = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD (world ranks)
  MPI_Request listen = MPI_REQUEST_NULL;
  WaitRecord incoming;
  std::vector<WaitRecord> replies;  // one slot per peer, alive until its send completes
  std::vector<MPI_Request> reply_reqs;
  std::vector<std::unique_ptr<WaitRecord>> probes;  // sent by this rank, one per round
  WaitRecord current;  // what this rank waits in now
};
ProbeChannel& channel() {
  static ProbeChannel c;
  return c;
}

// Answers the probes that have arrived (posting the listening receive the first time).
void serve_probes() {
  ProbeChannel& c = channel();
  if (c.comm == MPI_COMM_NULL) return;
  for (;;) {
    if (c.listen == MPI_REQUEST_NULL) {
      EFSIGN_MPI_CHECK(MPI_Irecv(&c.incoming, sizeof(WaitRecord), MPI_BYTE, MPI_ANY_SOURCE, kProbeTag, c.comm,
                                 &c.listen));
    }
    int got = 0;
    MPI_Status st;
    EFSIGN_MPI_CHECK(MPI_Test(&c.listen, &got, &st));
    if (!got) return;
    const int peer = st.MPI_SOURCE;
    if (c.replies.empty()) {
      int size = 0;
      EFSIGN_MPI_CHECK(MPI_Comm_size(c.comm, &size));
      c.replies.resize(size);
      c.reply_reqs.assign(size, MPI_REQUEST_NULL);
    }
    int free_slot = 1;
    if (c.reply_reqs[peer] != MPI_REQUEST_NULL)
      EFSIGN_MPI_CHECK(MPI_Test(&c.reply_reqs[peer], &free_slot, MPI_STATUS_IGNORE));
    if (free_slot) {  // else an earlier answer to that peer is still in flight: it has one
      c.replies[peer] = c.current;
      c.replies[peer].round = c.incoming.round;
      EFSIGN_MPI_CHECK(MPI_Isend(&c.replies[peer], sizeof(WaitRecord), MPI_BYTE, peer, kReplyTag, c.comm,
                                 &c.reply_reqs[peer]));
    }
  }
}

// What the peers said after this rank's deadline: for each peer, its answer or nothing.
struct PeerAnswers {
  std::vector<bool> answered;
  std::vector<WaitRecord> records;
};

// Sends this rank's record to every peer and collects their answers for `grace` seconds,
// answering their probes meanwhile.
PeerAnswers probe_peers(double grace) {
  ProbeChannel& c = channel();
  int me = 0, size = 1;
  EFSIGN_MPI_CHECK(MPI_Comm_rank(c.comm, &me));
  EFSIGN_MPI_CHECK(MPI_Comm_size(c.comm, &size));
  PeerAnswers a{std::vector<bool>(size, false), std::vector<WaitRecord>(size)};
  a.answered[me] = true;
  a.records[me] = c.current;
  // The probe outlives this call (a send to a stopped peer may never complete): one per
  // round, kept until the process ends; there is one round per timeout.
  c.probes.push_back(std::make_unique<WaitRecord>(c.current));
  WaitRecord& probe = *c.probes.back();
  probe.round = static_cast<int64_t>(c.probes.size());
  std::vector<MPI_Request> recvs(size, MPI_REQUEST_NULL);
  for (int p = 0; p < size; ++p) {
    if (p == me) continue;
    MPI_Request send;
    EFSIGN_MPI_CHECK(MPI_Isend(&probe, sizeof probe, MPI_BYTE, p, kProbeTag, c.comm, &send));
    EFSIGN_MPI_CHECK(MPI_Request_free(&send));
  }
  const auto t0 = Clock::now();
  int pending = size - 1;
  while (pending > 0 && seconds_since(t0) < grace) {
    serve_probes();
    for (int p = 0; p < size; ++p) {
      if (p == me || a.answered[p]) continue;
      if (recvs[p] == MPI_REQUEST_NULL)
        EFSIGN_MPI_CHECK(
            MPI_Irecv(&a.records[p], sizeof(WaitRecord), MPI_BYTE, p, kReplyTag, c.comm, &recvs[p]));
      int got = 0;
      EFSIGN_MPI_CHECK(MPI_Test(&recvs[p], &got, MPI_STATUS_IGNORE));
      if (!got) continue;
      if (a.records[p].round == probe.round) {
        a.answered[p] = true;
        --pending;
      }  // else an answer to an earlier round: receive again
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (MPI_Request& r : recvs) {  // a cancelled receive completes at once; then a.records is ours
    if (r == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
  }
  return a;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i)
    s += (i == 0 ? "" : i + 1 == ranks.size() ? " and " : ", ") + std::to_string(ranks[i]);
  return s;
}

// Open MPI's non-blocking allreduce (coll/libnbc) picks a binomial reduce + broadcast for
// fewer than 4 ranks or MPI_IN_PLACE, whatever the size: every byte crosses twice in
// series. Measured on 2 ranks (10th percentiles, interleaved in one process): 1e6 floats
// 3.0 ms against 2.1 ms for the blocking MPI_Allreduce, 1e7 floats 64 ms against 27 ms.
// Its ring, chosen through the MPI_T control variable, took 2.1 and 27 ms: the same.
// So from kRingMinBytes (libnbc's own limit for its bandwidth algorithms) the ring is
// chosen per call, unless the user set the variable (OMPI_MCA_...) or it does not exist
// (another MPI: nothing is changed).
constexpr std::size_t kRingMinBytes = 65536;
constexpr int kNbcDefault = 0, kNbcRing = 1;
struct NbcTuning {
  bool tools_up = false;
  MPI_T_cvar_handle iallreduce = MPI_T_CVAR_HANDLE_NULL;
  int value = kNbcDefault;
};
NbcTuning& nbc_tuning() {
  static NbcTuning t;
  return t;
}

void nbc_tuning_start() {
  NbcTuning& t = nbc_tuning();
  int provided = 0;
  if (MPI_T_init_thread(MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) return;
  t.tools_up = true;
  int index = -1, count = 0, value = -1;
  if (MPI_T_cvar_get_index("coll_libnbc_iallreduce_algorithm", &index) != MPI_SUCCESS) return;
  if (MPI_T_cvar_handle_alloc(index, nullptr, &t.iallreduce, &count) != MPI_SUCCESS || count != 1 ||
      MPI_T_cvar_read(t.iallreduce, &value) != MPI_SUCCESS || value != kNbcDefault) {
    if (t.iallreduce != MPI_T_CVAR_HANDLE_NULL) MPI_T_cvar_handle_free(&t.iallreduce);
    t.iallreduce = MPI_T_CVAR_HANDLE_NULL;
  }
}

// Before MPI_Finalize (MPI_T after it crashed Open MPI 4.1 on 3 ranks).
void nbc_tuning_stop() {
  NbcTuning& t = nbc_tuning();
  if (t.iallreduce != MPI_T_CVAR_HANDLE_NULL) MPI_T_cvar_handle_free(&t.iallreduce);
  if (t.tools_up) MPI_T_finalize();
  t.tools_up = false;
}

void choose_iallreduce(std::size_t bytes) {
  NbcTuning& t = nbc_tuning();
  if (t.iallreduce == MPI_T_CVAR_HANDLE_NULL) return;
  const int want = bytes >= kRingMinBytes ? kNbcRing : kNbcDefault;
  if (want != t.value && MPI_T_cvar_write(t.iallreduce, &want) == MPI_SUCCESS) t.value = want;
}

int checked_count(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw Error(fmt::format("{}: {} elements exceed MPI's int count limit", what, n));
  return static_cast<int>(n);
}

// Ends this process if the set-up it guards has not finished by the deadline (see
// MpiSession). Calls no MPI function: MPI is not up while it waits.
class InitWatchdog {
 public:
  // `where` is taken now, from the launcher's environment: the thread may not call MPI.
  explicit InitWatchdog(double timeout_s) : where_(where_am_i()) {
    if (timeout_s > 0) thread_ = std::thread([this, timeout_s] { watch(timeout_s); });
  }
  ~InitWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  InitWatchdog(const InitWatchdog&) = delete;
  InitWatchdog& operator=(const InitWatchdog&) = delete;

 private:
  void watch(double timeout_s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return done_; })) return;
    std::fprintf(stderr,
                 "efsign: fatal (%s): MPI_Init did not complete within %g s (--comm-timeout): a rank did not start, "
                 "or is stopped or hung before MPI_Init (which one, MPI does not say). Ending this rank so that "
                 "mpirun ends the job.\n",
                 where_.c_str(), timeout_s);
    std::fflush(stderr);
    std::_Exit(1);
  }
  const std::string where_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};
}  // namespace

double comm_timeout_arg(int argc, char** argv) {
  const std::string flag = "--comm-timeout";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* value = nullptr;
    if (a == flag && i + 1 < argc) value = argv[i + 1];
    else if (a.rfind(flag + "=", 0) == 0) value = argv[i] + flag.size() + 1;
    if (!value) continue;
    char* end = nullptr;
    const double v = std::strtod(value, &end);
    return end != value && *end == '\0' && v >= 0 ? v : kDefaultCommTimeoutS;
  }
  return kDefaultCommTimeoutS;
}

MpiSession::MpiSession(int* argc, char*** argv, double init_timeout_s) {
  InitWatchdog watchdog(init_timeout_s);
  int provided = 0;
  // SERIALIZED: with --overlap a communication thread issues the data collectives while
  // the main thread runs backward; the two never call MPI at the same time.
  EFSIGN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
  (void)provided;  // checked where a second thread needs it: mpi_serialized_threads()
  EFSIGN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  EFSIGN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  // The watchdog's side channel (Note [MPI watchdog]), right after MPI_Init's own wait
  // for every rank, before any communicator exists.
  EFSIGN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &channel().comm));
  nbc_tuning_start();
}

namespace {
// {this rank among the ranks of its host, their number} (MPI_COMM_TYPE_SHARED). Collective.
std::pair<int, int> local_rank_and_size() {
  int rank = 0;
  EFSIGN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_Comm local;
  EFSIGN_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local));
  int local_rank = 0, local_size = 1;
  EFSIGN_MPI_CHECK(MPI_Comm_rank(local, &local_rank));
  EFSIGN_MPI_CHECK(MPI_Comm_size(local, &local_size));
  MPI_Comm_free(&local);
  return {local_rank, local_size};
}
}  // namespace

int mpi_local_rank() { return local_rank_and_size().first; }
int mpi_local_size() { return local_rank_and_size().second; }

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // MPI_Finalize wants no pending receive: the watchdog's listening one goes first.
  ProbeChannel& c = channel();
  if (c.listen != MPI_REQUEST_NULL) {
    MPI_Cancel(&c.listen);
    MPI_Wait(&c.listen, MPI_STATUS_IGNORE);
  }
  for (MPI_Request& r : c.reply_reqs)
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  nbc_tuning_stop();
  MPI_Finalize();
}

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  double timeout_s = 0;
  std::string label;
  int64_t seq = 0;      // collectives issued on comm
  bool broken = false;  // a collective timed out and may still be pending

  // Issues one collective (`issue` fills the request) and completes it under the watchdog.
  template <typename Issue>
  void run(const char* what, Issue&& issue) {
    if (broken)
      throw CommError(fmt::format("MPI {} on the {} communicator: an earlier collective timed out ({})", what,
                                  label, where_am_i()));
    MPI_Request req = MPI_REQUEST_NULL;
    issue(&req);
    complete(req, what, ++seq);
  }

  void complete(MPI_Request& req, const char* what, int64_t number) {
    const bool polite = polite_waits();
    if (timeout_s <= 0 && !polite) {
      EFSIGN_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
      return;
    }
    const auto t0 = Clock::now();
    auto nap = std::chrono::microseconds(20);
    bool listening = false;
    const double listen_after = timeout_s > 0 ? std::min(kListenAfterS, timeout_s) : kListenAfterS;
    for (;;) {
      int done = 0;
      EFSIGN_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) break;
      const double waited = seconds_since(t0);
      if (waited > listen_after) {
        WaitRecord& cur = channel().current;
        if (!listening) {
          cur = WaitRecord{};
          cur.seq = number;
          copy_name(cur.what, what);
          copy_name(cur.label, label);
          listening = true;
        }
        cur.waited_s = waited;
        serve_probes();
        if (timeout_s > 0 && waited > timeout_s) timed_out(what, number, waited);  // throws
      }
      if (polite) {
        std::this_thread::sleep_for(nap);
        nap = std::min(nap * 2, std::chrono::microseconds(500));
      }
    }
    if (listening) channel().current = WaitRecord{};
  }

  [[noreturn]] void timed_out(const char* what, int64_t number, double waited) {
    broken = true;
    ProbeChannel& c = channel();
    c.current.timed_out = 1;
    const std::string head =
        fmt::format("MPI {} (collective #{} on the {} communicator) timed out: {} waited {:.1f} s for the other ranks "
                    "(--comm-timeout {:g} s)",
                    what, number, label, where_am_i(), waited, timeout_s);
    if (c.comm == MPI_COMM_NULL)
      throw CommError(head + "; which ranks did not arrive is unknown (MPI does not say, and the watchdog's side "
                             "channel is not up: MPI was not started by MpiSession). Aborting the job.");
    const PeerAnswers a = probe_peers(kProbeGraceS);
    int me = 0;
    MPI_Comm_rank(c.comm, &me);
    // A silent rank is stopped, hung outside MPI or dead. The others answered from the
    // collective they wait in: this one, a later one (a rank may finish a collective
    // before another has all of its data), or an earlier one.
    std::vector<int> silent, same;
    std::vector<std::pair<std::string, std::vector<int>>> others;  // where, who (in rank order)
    bool all_here = true;
    int reporter = me;
    double reporter_left = 0;
    for (int p = 0; p < static_cast<int>(a.answered.size()); ++p) {
      if (p == me) continue;
      if (!a.answered[p]) {
        silent.push_back(p);
        continue;
      }
      const WaitRecord& r = a.records[p];
      if (p < reporter) {
        reporter = p;
        reporter_left = r.timed_out ? 0.0 : std::max(0.0, timeout_s - r.waited_s);
      }
      if (std::string(r.label) == label && r.seq == number) {
        same.push_back(p);
        continue;
      }
      all_here = false;
      std::string where = fmt::format("{} #{} on the {} communicator", r.what, r.seq, r.label);
      if (std::string(r.label) == label) where += r.seq > number ? " (past this one)" : " (not yet at this one)";
      auto it = std::find_if(others.begin(), others.end(), [&](const auto& o) { return o.first == where; });
      if (it == others.end()) others.push_back({where, {p}});
      else it->second.push_back(p);
    }
    std::string msg = head + "; ";
    if (!silent.empty())
      msg += fmt::format("{} did not arrive (or stopped inside it): no answer to a probe within {:g} s, so {} "
                         "stopped, hung outside MPI, or dead",
                         rank_list(silent), kProbeGraceS, silent.size() == 1 ? "it is" : "they are");
    else if (all_here)
      msg += "every rank answered a probe from this collective, yet it does not complete (a transport failure?)";
    else
      msg += "every rank answered a probe, so none is stopped: they wait in collectives that cannot complete "
             "together (the ranks called collectives in different orders)";
    if (!same.empty())
      msg += fmt::format("; {} wait{} in the same {}", rank_list(same), same.size() == 1 ? "s" : "", what);
    for (const auto& [where, ranks] : others)
      msg += fmt::format("; {} wait{} in {}", rank_list(ranks), ranks.size() == 1 ? "s" : "", where);
    msg += ". Aborting the job.";
    if (reporter != me) {
      // A lower rank that answered will say the same and abort the job; wait for that,
      // answering probes, and speak only if it does not happen.
      const auto t1 = Clock::now();
      const double allowance = reporter_left + kProbeGraceS + kReportMarginS;
      while (seconds_since(t1) < allowance) {
        serve_probes();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      msg += fmt::format(" (rank {} was expected to report this first)", reporter);
    }
    throw CommError(msg);
  }
};

MpiCommunicator::MpiCommunicator(double timeout_s, std::string label) : impl_(std::make_unique<Impl>()) {
  if (!(timeout_s >= 0)) throw UsageError(fmt::format("MPI communicator: timeout {} s must be >= 0", timeout_s));
  impl_->timeout_s = timeout_s;
  impl_->label = std::move(label);
  // MPI_Comm_idup is collective too: a rank that never comes is caught here as well.
  impl_->run("comm_idup",
             [&](MPI_Request* req) { EFSIGN_MPI_CHECK(MPI_Comm_idup(MPI_COMM_WORLD, &impl_->comm, req)); });
  impl_->seq = 0;  // the communicator's own collectives count from 1
  EFSIGN_MPI_CHECK(MPI_Comm_rank(impl_->comm, &rank_));
  EFSIGN_MPI_CHECK(MPI_Comm_size(impl_->comm, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After a timeout a collective may still be pending on comm: leave it to the abort.
  if (!finalized && !impl_->broken && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}

void MpiCommunicator::allgather(Span<const std::byte> send, Span<std::byte> recv) {
  if (recv.size() != send.size() * static_cast<std::size_t>(size_))
    throw Error(fmt::format("allgather: recv holds {} bytes, need {} x {}", recv.size(), size_, send.size()));
  const int n = checked_count(send.size(), "allgather");
  impl_->run("allgather", [&](MPI_Request* req) {
    EFSIGN_MPI_CHECK(MPI_Iallgather(send.data(), n, MPI_BYTE, recv.data(), n, MPI_BYTE, impl_->comm, req));
  });
  count(static_cast<int64_t>(send.size()), ring_allgather_wire_bytes(static_cast<int64_t>(send.size()), size_));
}

namespace {
// MPI's v-collectives take int counts and displacements.
std::vector<int> int_counts(Span<const int64_t> counts, const char* what, std::vector<int>* displs) {
  std::vector<int> out(counts.size());
  int64_t off = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    out[i] = checked_count(static_cast<std::size_t>(counts[i]), what);
    if (displs) displs->push_back(checked_count(static_cast<std::size_t>(off), what));
    off += counts[i];
  }
  return out;
}
}  // namespace

void MpiCommunicator::alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_alltoallv(send, counts, recv);
  std::vector<int> sdispl, rdispl;
  const std::vector<int> scount = int_counts(counts, "alltoallv", &sdispl);
  const int mine = scount[rank_];
  const std::vector<int> rcount(size_, mine);
  for (int w = 0; w < size_; ++w) rdispl.push_back(checked_count(static_cast<std::size_t>(w) * mine, "alltoallv"));
  impl_->run("alltoallv", [&](MPI_Request* req) {
    EFSIGN_MPI_CHECK(MPI_Ialltoallv(send.data(), scount.data(), sdispl.data(), MPI_BYTE, recv.data(), rcount.data(),
                                    rdispl.data(), MPI_BYTE, impl_->comm, req));
  });
}

void MpiCommunicator::allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_allgatherv(send, counts, recv);
  std::vector<int> displ;
  const std::vector<int> rcount = int_counts(counts, "allgatherv", &displ);
  impl_->run("allgatherv", [&](MPI_Request* req) {
    EFSIGN_MPI_CHECK(MPI_Iallgatherv(send.data(), rcount[rank_], MPI_BYTE, recv.data(), rcount.data(), displ.data(),
                                     MPI_BYTE, impl_->comm, req));
  });
}

void MpiCommunicator::allreduce_sum(Span<float> data) {
  const int n = checked_count(data.size(), "allreduce");
  choose_iallreduce(data.size_bytes());
  impl_->run("allreduce", [&](MPI_Request* req) {
    EFSIGN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data.data(), n, MPI_FLOAT, MPI_SUM, impl_->comm, req));
  });
  count(static_cast<int64_t>(data.size_bytes()),
        ring_allreduce_wire_bytes(static_cast<int64_t>(data.size_bytes()), size_));
}

void MpiCommunicator::allreduce_sum(Span<double> data) {
  const int n = checked_count(data.size(), "allreduce");
  choose_iallreduce(data.size_bytes());
  impl_->run("allreduce", [&](MPI_Request* req) {
    EFSIGN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data.data(), n, MPI_DOUBLE, MPI_SUM, impl_->comm, req));
  });
}

void MpiCommunicator::broadcast(Span<std::byte> data, int root) {
  const int n = checked_count(data.size(), "broadcast");
  impl_->run("broadcast", [&](MPI_Request* req) {
    EFSIGN_MPI_CHECK(MPI_Ibcast(data.data(), n, MPI_BYTE, root, impl_->comm, req));
  });
}

bool mpi_serialized_threads() {
  int provided = MPI_THREAD_SINGLE;
  EFSIGN_MPI_CHECK(MPI_Query_thread(&provided));
  return provided >= MPI_THREAD_SERIALIZED;
}

void MpiCommunicator::barrier() {
  impl_->run("barrier", [&](MPI_Request* req) { EFSIGN_MPI_CHECK(MPI_Ibarrier(impl_->comm, req)); });
}

}  // namespace efsign
