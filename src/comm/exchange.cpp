#include "efsign/exchange.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign {

ExchangeKind parse_exchange(const std::string& name) {
  if (name == "allgather") return ExchangeKind::kAllgather;
  if (name == "two-phase") return ExchangeKind::kTwoPhase;
  if (name == "vote") return ExchangeKind::kVote;
  throw UsageError(fmt::format("unknown exchange '{}' (choose one of: allgather, two-phase, vote)", name));
}

std::string exchange_kind_name(ExchangeKind kind) {
  switch (kind) {
    case ExchangeKind::kAllgather: return "allgather";
    case ExchangeKind::kTwoPhase: return "two-phase";
    case ExchangeKind::kVote: return "vote";
  }
  return "?";
}

std::vector<Bucket> make_buckets(const LayerTable& table, int64_t bucket_bytes) {
  const int64_t L = table.num_layers();
  if (bucket_bytes <= 0 || L == 0) return {Bucket{0, L}};
  std::vector<Bucket> out;
  int64_t last = L, bytes = 0;
  for (int64_t l = L - 1; l >= 0; --l) {
    bytes += 4 * table.size(l);
    if (bytes >= bucket_bytes || l == 0) {
      out.push_back(Bucket{l, last});
      last = l;
      bytes = 0;
    }
  }
  return out;
}

TwoPhaseLayout TwoPhaseLayout::build(const LayerTable& table, const std::vector<Bucket>& buckets, int world,
                                     int rank) {
  TwoPhaseLayout t;
  t.world = world;
  t.rank = rank;
  const int64_t T = table.total_words();
  const int64_t K = (T + world - 1) / world;
  t.chunk_words = K;
  auto chunk_begin = [&](int64_t c) { return std::min(c * K, T); };
  t.layer_segments.assign(table.num_layers(), {});
  t.buckets.resize(buckets.size());
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    BucketBlocks& tb = t.buckets[b];
    const int64_t bw0 = table.word_offset(buckets[b].first);
    const int64_t bw1 = table.word_offset(buckets[b].last - 1) + table.words(buckets[b].last - 1);
    tb.blocks.resize(world);
    for (int c = 0; c < world; ++c) {
      Block& blk = tb.blocks[c];
      blk.word_begin = std::max(bw0, chunk_begin(c));
      blk.word_end = std::min(bw1, chunk_begin(c + 1));
      if (blk.word_end <= blk.word_begin) {  // no word of this bucket in chunk c
        blk.word_begin = blk.word_end = 0;
        continue;
      }
      for (int64_t l = buckets[b].first; l < buckets[b].last; ++l) {
        const int64_t lw0 = table.word_offset(l), lw1 = lw0 + table.words(l);
        const int64_t w0 = std::max(lw0, blk.word_begin), w1 = std::min(lw1, blk.word_end);
        if (w1 <= w0) continue;
        Segment s;
        s.layer = l;
        s.chunk = c;
        s.word_begin = w0;
        s.word_end = w1;
        s.elem_begin = 32 * (w0 - lw0);
        s.elems = std::min(32 * (w1 - lw0), table.size(l)) - s.elem_begin;
        s.slot = static_cast<int64_t>(blk.segments.size());
        s.server_offset = -1;
        blk.segments.push_back(static_cast<int64_t>(t.segments.size()));
        t.layer_segments[l].push_back(static_cast<int64_t>(t.segments.size()));
        t.segments.push_back(s);
      }
    }
    tb.counts.resize(world);
    tb.gathered_at.resize(world);
    for (int c = 0; c < world; ++c) {
      tb.counts[c] = 4 * tb.blocks[c].len();
      tb.gathered_at[c] = tb.gathered_words;
      tb.gathered_words += tb.blocks[c].len();
    }
  }
  // The server state is laid out in word order, whatever the buckets, so that a
  // checkpoint taken with one bucketing (--overlap or not) resumes under another.
  std::vector<Segment*> own;
  for (Segment& s : t.segments)
    if (s.chunk == rank) own.push_back(&s);
  std::sort(own.begin(), own.end(), [](const Segment* a, const Segment* b) { return a->word_begin < b->word_begin; });
  for (Segment* s : own) {
    s->server_offset = t.server_elems;
    t.server_elems += s->elems;
  }
  return t;
}

int64_t TwoPhaseLayout::wire_bytes() const {
  int64_t total = 0;
  for (const BucketBlocks& tb : buckets) {
    for (int c = 0; c < world; ++c)
      if (c != rank) total += tb.counts[c];
    total += ring_allgather_wire_bytes(tb.counts[rank], world);
  }
  return total;
}

namespace {

using Clock = std::chrono::steady_clock;

// Copies runs between two host arrays (the verdict's scales from a host buffer).
void gather_on_host(const std::vector<CopyRun>& runs, const uint32_t* src, uint32_t* dst) {
  for (const CopyRun& r : runs)
    if (r.len) std::memcpy(dst + r.dst, src + r.src, 4 * static_cast<std::size_t>(r.len));
}

}  // namespace

// ---- GradientExchange: buckets, staging, timing, counters.

struct GradientExchange::Timing {
  struct Mark {
    std::unique_ptr<CodecEvent> event;
    Clock::time_point wall;
  };
  std::vector<Mark> marks;    // [marks[i], marks[i + 1]) belongs to phases[i]
  std::vector<Phase> phases;  // (a restart between buckets leaves the gap out)
  std::vector<std::pair<std::size_t, std::size_t>> laps;  // (from mark, to mark) per phase entry
};

GradientExchange::GradientExchange(const LayerTable& table, std::vector<Bucket> buckets,
                                   std::shared_ptr<Communicator> comm, std::shared_ptr<Codec> codec)
    : table_(table), buckets_(std::move(buckets)), comm_(std::move(comm)), codec_(std::move(codec)),
      timing_(std::make_unique<Timing>()) {
  if (!comm_ || !codec_) throw Error("exchange: no communicator or no codec");
  world_ = comm_->size();
  rank_ = comm_->rank();
  const bool host_codec = codec_->device_kind() == DeviceKind::kCpu;
  const bool host_comm = comm_->memory() == MemoryKind::kHost;
  if (host_codec && !host_comm)
    throw UsageError(fmt::format("the {} communicator moves GPU memory, but the parameters are on the CPU "
                                 "(use --device cuda, or --comm mpi)", comm_->backend()));
  staged_ = !host_codec && host_comm;
  device_comm_ = !host_comm;
  if (device_comm_) codec_->set_stream(comm_->stream());
  const int64_t L = table_.num_layers();
  bucket_of_.assign(L, -1);
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& k = buckets_[b];
    if (k.first < 0 || k.last > L || k.first >= k.last) throw Error("exchange: empty or out-of-range bucket");
    for (int64_t l = k.first; l < k.last; ++l) {
      if (bucket_of_[l] != -1) throw Error(fmt::format("exchange: layer {} is in two buckets", l));
      bucket_of_[l] = static_cast<int>(b);
    }
  }
  for (int64_t l = 0; l < L; ++l)
    if (bucket_of_[l] == -1) throw Error(fmt::format("exchange: layer {} is in no bucket", l));
}

GradientExchange::~GradientExchange() {
  // Work still queued on the codec's stream (a bucket a backward started, or a device
  // collective) reads buffers that go with this object: let it finish first.
  try {
    if (device_comm_) comm_->synchronize("the exchange's last collectives");
    codec_->synchronize();
  } catch (const std::exception&) {  // already failed: the job is ending anyway
  }
}

void GradientExchange::set_grad(int64_t layer, const float* grad) {
  if (sets_.empty()) throw Error("exchange: set_grad before bind");
  const int b = bucket_of_[layer];
  sets_[b]->set_grad(layer - buckets_[b].first, grad);
}

void GradientExchange::wait_for(void* stream) { codec_->wait(*codec_->record_on(stream)); }
void GradientExchange::signal(void* stream) { codec_->wait_on(*codec_->record(), stream); }

GradientExchange::Staged GradientExchange::make_staged(int64_t bytes) {
  Staged s;
  s.bytes = bytes;
  s.dev = codec_->allocate(std::max<int64_t>(bytes, 4));
  if (staged_) s.host = codec_->allocate_staging(std::max<int64_t>(bytes, 4));
  return s;
}

void GradientExchange::down(const Staged& s) {
  if (!staged_) return;
  codec_->copy(s.host.get(), s.dev.get(), s.bytes);
  codec_->synchronize();
}

void GradientExchange::up(const Staged& s) {
  if (staged_) codec_->copy(s.dev.get(), s.host.get(), s.bytes);
}

void GradientExchange::start_timing() {
  Timing& t = *timing_;
  t.marks.push_back(Timing::Mark{codec_->record(), Clock::now()});
}

void GradientExchange::lap(Phase phase) {
  Timing& t = *timing_;
  t.marks.push_back(Timing::Mark{codec_->record(), Clock::now()});
  t.phases.push_back(phase);
  t.laps.emplace_back(t.marks.size() - 2, t.marks.size() - 1);
}

void GradientExchange::end_timing() {
  Timing& t = *timing_;
  for (std::size_t i = 0; i < t.phases.size(); ++i) {
    const Timing::Mark& a = t.marks[t.laps[i].first];
    const Timing::Mark& b = t.marks[t.laps[i].second];
    double ms = codec_->elapsed_ms(*a.event, *b.event);  // CUDA events, complete by now
    if (ms < 0) ms = std::chrono::duration<double, std::milli>(b.wall - a.wall).count();
    (t.phases[i] == Phase::kEncode ? totals_.encode_ms : totals_.comm_ms) += ms;
  }
  t.marks.clear();
  t.phases.clear();
  t.laps.clear();
}

void GradientExchange::synchronize(const char* what) {
  comm_->synchronize(what);
  codec_->synchronize();
}

GradientExchange::Totals GradientExchange::take_totals() { return std::exchange(totals_, Totals{}); }

// ---- SignExchange.

struct SignExchange::BucketBuffers {
  int64_t word_begin = 0, words = 0, msg_words = 0;  // the message: words + one scale per layer
  Staged send, recv;                                  // allgather/vote: the message, the W messages
  CodecBuffer message;                                // two-phase: this rank's message
  Staged to_servers, from_workers, served, gathered;  // two-phase
  std::unique_ptr<GatherPlan> to_servers_plan;
  std::unique_ptr<LayerSet> apply_set;
  std::unique_ptr<LayerSet> server_add, server_pack, server_commit;  // two-phase: this rank's segments
  CodecBuffer server_scales;                                         // two-phase: one per own segment
  std::vector<CopyRun> scale_runs;  // where the verdict's scales lie in the received buffer
  std::unique_ptr<GatherPlan> scale_plan;
};

SignExchange::SignExchange(ExchangeKind kind, const LayerTable& table, std::vector<Bucket> buckets,
                           std::shared_ptr<Communicator> comm, std::shared_ptr<Codec> codec)
    : GradientExchange(table, std::move(buckets), std::move(comm), std::move(codec)), kind_(kind) {
  Codec& c = *codec_;
  const int W = world_;
  const int64_t L = table_.num_layers();
  if (kind_ == ExchangeKind::kTwoPhase) layout_ = TwoPhaseLayout::build(table_, buckets_, W, rank_);
  bufs_.resize(buckets_.size());
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    BucketBuffers& bb = bufs_[b];
    const Bucket& k = buckets_[b];
    bb.word_begin = table_.word_offset(k.first);
    bb.words = table_.word_offset(k.last - 1) + table_.words(k.last - 1) - bb.word_begin;
    bb.msg_words = bb.words + (k.last - k.first);
    if (kind_ != ExchangeKind::kTwoPhase) {
      bb.send = make_staged(4 * bb.msg_words);  // compress writes the message in place
      bb.recv = make_staged(4 * W * bb.msg_words);
      for (int w = 0; w < W; ++w)  // verdict: rank w's scale of layer l at w * L + l
        bb.scale_runs.push_back(CopyRun{w * bb.msg_words + bb.words, w * L + k.first, k.last - k.first});
    } else {
      const TwoPhaseLayout::BucketBlocks& tb = layout_.buckets[b];
      const TwoPhaseLayout::Block& mine = tb.blocks[rank_];
      bb.message = c.allocate(4 * bb.msg_words);
      int64_t total = 0;
      std::vector<CopyRun> runs;
      for (int cc = 0; cc < W; ++cc) {  // block (b, cc): its words, then its segments' layer scales
        const TwoPhaseLayout::Block& blk = tb.blocks[cc];
        runs.push_back(CopyRun{blk.word_begin - bb.word_begin, total, blk.words()});
        for (std::size_t s = 0; s < blk.segments.size(); ++s)
          runs.push_back(CopyRun{bb.words + (layout_.segments[blk.segments[s]].layer - k.first),
                                 total + blk.words() + static_cast<int64_t>(s), 1});
        total += blk.len();
        for (int64_t id : blk.segments)  // verdict: every segment's server scale, by segment id
          bb.scale_runs.push_back(CopyRun{tb.gathered_at[cc] + blk.words() + layout_.segments[id].slot, id, 1});
      }
      bb.to_servers_plan = c.prepare_gather(runs);
      bb.to_servers = make_staged(4 * total);
      bb.from_workers = make_staged(4 * W * mine.len());
      bb.served = make_staged(4 * mine.len());
      bb.gathered = make_staged(4 * tb.gathered_words);
      bb.server_scales = c.allocate(4 * std::max<int64_t>(1, static_cast<int64_t>(mine.segments.size())));
    }
    if (device_comm_) bb.scale_plan = c.prepare_gather(bb.scale_runs);
  }
  verdict_.assign(kind_ == ExchangeKind::kTwoPhase ? static_cast<int64_t>(layout_.segments.size()) : W * L, 0);
  if (device_comm_) {
    verdict_dev_ = c.allocate(4 * std::max<std::size_t>(verdict_.size(), 1));
    verdict_host_ = c.allocate_staging(4 * std::max<std::size_t>(verdict_.size(), 1));
  }
  if (kind_ == ExchangeKind::kTwoPhase) server_p_ = c.allocate(4 * std::max<int64_t>(layout_.server_elems, 1));
}

SignExchange::~SignExchange() = default;

void SignExchange::bind(const std::vector<CodecLayer>& layers, float* prev_scales, float* server_error) {
  if (static_cast<int64_t>(layers.size()) != table_.num_layers())
    throw Error(fmt::format("SignExchange::bind: {} layers for a table of {}", layers.size(), table_.num_layers()));
  if (!prev_scales) throw Error("SignExchange::bind: no scale array");
  if (kind_ == ExchangeKind::kTwoPhase && layout_.server_elems > 0 && !server_error)
    throw Error("SignExchange::bind: two-phase needs a server error buffer");
  prev_scales_ = prev_scales;
  Codec& c = *codec_;
  std::vector<std::unique_ptr<LayerSet>> compress;
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    BucketBuffers& bb = bufs_[b];
    const Bucket& k = buckets_[b];
    std::vector<CodecLayer> pack;
    for (int64_t l = k.first; l < k.last; ++l) {
      CodecLayer d = layers[l];
      d.grad = nullptr;
      d.n = table_.size(l);
      d.word_offset = table_.word_offset(l) - bb.word_begin;
      d.scale_index = bb.words + (l - k.first);
      d.elem_offset = table_.elem_offset(l);
      pack.push_back(d);
    }
    compress.push_back(c.prepare(pack));
    if (kind_ != ExchangeKind::kTwoPhase) {
      bb.apply_set = c.prepare(pack);
      continue;
    }
    // Every segment of the bucket, applied from the gathered blocks as one rank's
    // message; and this rank's own segments on the server side (Note [two-phase]).
    const TwoPhaseLayout::BucketBlocks& tb = layout_.buckets[b];
    std::vector<CodecLayer> apply, add, packp, commit;
    for (int cc = 0; cc < world_; ++cc) {
      const TwoPhaseLayout::Block& blk = tb.blocks[cc];
      for (int64_t id : blk.segments) {
        const TwoPhaseLayout::Segment& s = layout_.segments[id];
        CodecLayer d;
        d.param = layers[s.layer].param + s.elem_begin;
        d.n = s.elems;
        d.word_offset = tb.gathered_at[cc] + (s.word_begin - blk.word_begin);
        d.scale_index = tb.gathered_at[cc] + blk.words() + s.slot;
        apply.push_back(d);
      }
    }
    const TwoPhaseLayout::Block& mine = tb.blocks[rank_];
    float* p = server_p_.get<float>();
    for (int64_t id : mine.segments) {
      const TwoPhaseLayout::Segment& s = layout_.segments[id];
      CodecLayer d;
      d.n = s.elems;
      d.word_offset = s.word_begin - mine.word_begin;
      d.scale_index = mine.words() + s.slot;
      d.grad = server_error + s.server_offset;  // p = e + average
      d.param = p + s.server_offset;
      add.push_back(d);
      d.grad = p + s.server_offset;  // pack p (lr = 1); its scale is mean |p|
      d.param = nullptr;
      packp.push_back(d);
      d.param = server_error + s.server_offset;  // e' = p - s sign(p)
      commit.push_back(d);
    }
    bb.apply_set = c.prepare(apply);
    bb.server_add = c.prepare(add);
    bb.server_pack = c.prepare(packp);
    bb.server_commit = c.prepare(commit);
  }
  set_compress_sets(std::move(compress));
}

void SignExchange::run(int b) {
  if (!prev_scales_) throw Error("SignExchange: run before bind");
  BucketBuffers& bb = bufs_[b];
  Codec& c = *codec_;
  Communicator& comm = *comm_;
  float* prev = prev_scales_ + buckets_[b].first;
  start_timing();
  if (kind_ != ExchangeKind::kTwoPhase) {
    c.compress(compress_set(b), params_, prev, bb.send.codec_side<uint32_t>());
    lap(Phase::kEncode);
    down(bb.send);
    collective([&] { comm.allgather(bb.send.send_bytes(), bb.recv.recv_bytes()); });
    up(bb.recv);
    lap(Phase::kComm);
    return;
  }
  // Note [two-phase].
  const TwoPhaseLayout::BucketBlocks& tb = layout_.buckets[b];
  const TwoPhaseLayout::Block& mine = tb.blocks[rank_];
  c.compress(compress_set(b), params_, prev, bb.message.get<uint32_t>());
  c.gather(*bb.to_servers_plan, bb.message.get<uint32_t>(), bb.to_servers.codec_side<uint32_t>());
  lap(Phase::kEncode);
  down(bb.to_servers);
  collective([&] {
    comm.alltoallv(bb.to_servers.send_bytes(), Span<const int64_t>(tb.counts), bb.from_workers.recv_bytes());
  });
  up(bb.from_workers);
  lap(Phase::kComm);
  // The server: p = e + the average of the W copies; pack p with scale mean |p|.
  c.decode(*bb.server_add, bb.from_workers.codec_side<uint32_t>(), world_, mine.len(), DecodeMode::kAdd);
  codec::CompressParams unit;
  unit.lr = 1.0f;  // lr * p == p exactly: compress only packs and takes mean |p|
  c.compress(*bb.server_pack, unit, bb.server_scales.get<float>(), bb.served.codec_side<uint32_t>());
  lap(Phase::kEncode);
  down(bb.served);
  collective([&] {
    comm.allgatherv(bb.served.send_bytes(), Span<const int64_t>(tb.counts), bb.gathered.recv_bytes());
  });
  up(bb.gathered);
  lap(Phase::kComm);
}

std::string SignExchange::finish() {
  Codec& c = *codec_;
  uint32_t* verdict = verdict_.data();
  if (device_comm_) {  // the scales to the host, then the step's one host wait
    for (BucketBuffers& bb : bufs_)
      c.gather(*bb.scale_plan, (kind_ == ExchangeKind::kTwoPhase ? bb.gathered : bb.recv).codec_side<uint32_t>(), verdict_dev_.get<uint32_t>());
    c.copy(verdict_host_.get(), verdict_dev_.get(), 4 * static_cast<int64_t>(verdict_.size()));
    synchronize("the sign exchange");
    std::memcpy(verdict, verdict_host_.get(), 4 * verdict_.size());
  } else {
    for (BucketBuffers& bb : bufs_) gather_on_host(bb.scale_runs, (kind_ == ExchangeKind::kTwoPhase ? bb.gathered : bb.recv).comm_side<uint32_t>(), verdict);
  }
  end_timing();
  if (kind_ == ExchangeKind::kTwoPhase) {
    for (std::size_t k = 0; k < layout_.segments.size(); ++k)
      if (!std::isfinite(codec::bits_to_float(verdict[k])))
        return fmt::format("non-finite gradient (NaN or Inf) in layer {} (its average, formed on rank {}, is not "
                           "finite)", layout_.segments[k].layer, layout_.segments[k].chunk);
    return "";
  }
  const int64_t L = table_.num_layers();
  for (int w = 0; w < world_; ++w)  // the lowest (rank, layer), as one message would report it
    for (int64_t l = 0; l < L; ++l)
      if (!std::isfinite(codec::bits_to_float(verdict[w * L + l])))
        return fmt::format("non-finite gradient (NaN or Inf) on rank {} in layer {}", w, l);
  return "";
}

void SignExchange::apply() {
  Codec& c = *codec_;
  for (BucketBuffers& bb : bufs_) {
    if (kind_ == ExchangeKind::kTwoPhase) {
      c.decode(*bb.apply_set, bb.gathered.codec_side<uint32_t>(), 1, 0, DecodeMode::kApply);
      c.error_from_state(*bb.server_commit, bb.served.codec_side<uint32_t>());  // commit e'
    } else {
      c.decode(*bb.apply_set, bb.recv.codec_side<uint32_t>(), world_, bb.msg_words,
               kind_ == ExchangeKind::kVote ? DecodeMode::kVote : DecodeMode::kApply);
    }
  }
}

int64_t SignExchange::handed_bytes_per_step() const {
  int64_t total = 0;
  for (const BucketBuffers& bb : bufs_)
    total += kind_ == ExchangeKind::kTwoPhase ? bb.to_servers.bytes + bb.served.bytes : bb.send.bytes;
  return total;
}

int64_t SignExchange::wire_bytes_per_step() const {
  if (kind_ == ExchangeKind::kTwoPhase) return layout_.wire_bytes();
  int64_t total = 0;
  for (const BucketBuffers& bb : bufs_) total += ring_allgather_wire_bytes(bb.send.bytes, world_);
  return total;
}

std::string SignExchange::describe() const {
  const char* what = kind_ == ExchangeKind::kTwoPhase ? "two-phase compressed allreduce (alltoallv + allgatherv)"
                     : kind_ == ExchangeKind::kVote   ? "majority vote over an allgather of packed signs"
                                                      : "allgather of packed signs";
  const std::string buckets = bufs_.size() == 1 ? "" : fmt::format(", {} buckets", bufs_.size());
  return fmt::format("{} ({}{}{})", what, comm_->backend(), buckets, staged_ ? ", through pinned host buffers" : "");
}

// ---- DenseExchange.

DenseExchange::DenseExchange(const LayerTable& table, std::vector<Bucket> buckets,
                             std::shared_ptr<Communicator> comm, std::shared_ptr<Codec> codec)
    : GradientExchange(table, std::move(buckets), std::move(comm), std::move(codec)) {
  int64_t at = 0;
  for (const Bucket& k : buckets_) {
    slices_.push_back(Slice{at, span_elems(k) + (k.last - k.first)});
    at += slices_.back().floats;
  }
  flat_ = make_staged(4 * at);
}

DenseExchange::~DenseExchange() = default;

int64_t DenseExchange::span_elems(const Bucket& k) const {
  return table_.elem_offset(k.last - 1) + table_.size(k.last - 1) - table_.elem_offset(k.first);
}

void DenseExchange::bind(const std::vector<CodecLayer>& layers) {
  if (static_cast<int64_t>(layers.size()) != table_.num_layers())
    throw Error(fmt::format("DenseExchange::bind: {} layers for a table of {}", layers.size(), table_.num_layers()));
  std::vector<std::unique_ptr<LayerSet>> sets;
  update_sets_.clear();
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& k = buckets_[b];
    std::vector<CodecLayer> set;
    for (int64_t l = k.first; l < k.last; ++l) {
      CodecLayer d = layers[l];
      d.grad = nullptr;
      d.n = table_.size(l);
      d.elem_offset = slices_[b].first + table_.elem_offset(l) - table_.elem_offset(k.first);
      d.scale_index = slices_[b].first + span_elems(k) + (l - k.first);  // the layer's presence
      set.push_back(d);
    }
    sets.push_back(codec_->prepare(set));
    update_sets_.push_back(codec_->prepare(set));
  }
  set_compress_sets(std::move(sets));
}

void DenseExchange::run(int b) {
  if (update_sets_.empty()) throw Error("DenseExchange: run before bind");
  const Slice& s = slices_[b];
  start_timing();
  codec_->flatten(compress_set(b), flat_.codec_side<float>());
  lap(Phase::kEncode);
  if (staged_) {
    codec_->copy(flat_.host.get<float>() + s.first, flat_.dev.get<float>() + s.first, 4 * s.floats);
    codec_->synchronize();
  }
  collective([&] {
    comm_->allreduce_sum(Span<float>(flat_.comm_side<float>() + s.first, static_cast<std::size_t>(s.floats)));
  });
  if (staged_) codec_->copy(flat_.dev.get<float>() + s.first, flat_.host.get<float>() + s.first, 4 * s.floats);
  lap(Phase::kComm);
}

std::string DenseExchange::finish() {
  if (device_comm_) synchronize("the fp32 allreduce");
  end_timing();
  const bool finite = codec_->all_finite(flat_.codec_side<float>(), flat_.bytes / 4);
  return finite ? "" : "non-finite averaged gradient (NaN or Inf on some rank)";
}

void DenseExchange::apply() {
  for (auto& set : update_sets_) codec_->sgdm_update(*set, flat_.codec_side<float>(), world_, params_);
}

int64_t DenseExchange::handed_bytes_per_step() const { return flat_.bytes; }

int64_t DenseExchange::wire_bytes_per_step() const {
  int64_t total = 0;
  for (const Slice& s : slices_) total += ring_allreduce_wire_bytes(4 * s.floats, world_);
  return total;
}

std::string DenseExchange::describe() const {
  const std::string buckets = buckets_.size() == 1 ? "" : fmt::format(", {} buckets", buckets_.size());
  return fmt::format("fp32 allreduce ({}{}{})", comm_->backend(), buckets, staged_ ? ", through pinned host buffers" : "");
}

}  // namespace efsign
