#include "efsign/exchange.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

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

using codec::bits_to_float;
using codec::float_to_bits;

SignExchange::SignExchange(ExchangeKind kind, const LayerTable& table, std::vector<Bucket> buckets,
                           Communicator& comm, codec::Isa isa)
    : kind_(kind),
      table_(table),
      buckets_(std::move(buckets)),
      comm_(comm),
      isa_(isa),
      world_(comm.size()),
      rank_(comm.rank()) {
  if (comm.memory() != MemoryKind::kHost) throw Error("SignExchange needs a host communicator");
  const int64_t L = table_.num_layers();
  bucket_of_.assign(L, -1);
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& k = buckets_[b];
    if (k.first < 0 || k.last > L || k.first >= k.last) throw Error("SignExchange: empty or out-of-range bucket");
    for (int64_t l = k.first; l < k.last; ++l) {
      if (bucket_of_[l] != -1) throw Error(fmt::format("SignExchange: layer {} is in two buckets", l));
      bucket_of_[l] = static_cast<int>(b);
    }
  }
  for (int64_t l = 0; l < L; ++l)
    if (bucket_of_[l] == -1) throw Error(fmt::format("SignExchange: layer {} is in no bucket", l));
  bb_.resize(buckets_.size());
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    BucketBuffers& bb = bb_[b];
    bb.word_begin = table_.word_offset(buckets_[b].first);
    bb.words = table_.word_offset(buckets_[b].last - 1) + table_.words(buckets_[b].last - 1) - bb.word_begin;
    bb.message.assign(bb.words + (buckets_[b].last - buckets_[b].first), 0);
    if (kind_ != ExchangeKind::kTwoPhase) bb.recv.assign(bb.message.size() * world_, 0);
  }
  if (kind_ == ExchangeKind::kTwoPhase) {
    tp_ = TwoPhaseLayout::build(table_, buckets_, world_, rank_);
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      const TwoPhaseLayout::BucketBlocks& tb = tp_.buckets[b];
      BucketBuffers& bb = bb_[b];
      int64_t total = 0;
      for (const auto& blk : tb.blocks) total += blk.len();
      bb.to_servers.assign(total, 0);
      bb.gathered.assign(tb.gathered_words, 0);
      bb.from_workers.assign(world_ * tb.blocks[rank_].len(), 0);
      bb.served.assign(tb.blocks[rank_].len(), 0);
    }
    err_.assign(tp_.server_elems, 0.0f);
    p_.assign(tp_.server_elems, 0.0f);
  }
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

Span<uint32_t> SignExchange::words_of(int64_t layer) {
  BucketBuffers& bb = bb_[bucket_of_[layer]];
  return Span<uint32_t>(bb.message.data() + table_.word_offset(layer) - bb.word_begin, table_.words(layer));
}

void SignExchange::set_scale(int64_t layer, float scale) {
  const int b = bucket_of_[layer];
  bb_[b].message[bb_[b].words + (layer - buckets_[b].first)] = float_to_bits(scale);
}

void SignExchange::exchange(int b) {
  BucketBuffers& bb = bb_[b];
  if (kind_ == ExchangeKind::kTwoPhase) {
    exchange_two_phase(b);
    return;
  }
  comm_.allgather(as_bytes(Span<const uint32_t>(bb.message)), as_writable_bytes(Span<uint32_t>(bb.recv)));
}

void SignExchange::exchange_two_phase(int b) {
  BucketBuffers& bb = bb_[b];
  const TwoPhaseLayout::BucketBlocks& tb = tp_.buckets[b];
  const int64_t first = buckets_[b].first;
  // Phase 1: block (b, c) of this rank's message goes to rank c.
  int64_t off = 0;
  for (int c = 0; c < world_; ++c) {
    const TwoPhaseLayout::Block& blk = tb.blocks[c];
    const int64_t nw = blk.words();
    if (nw) std::memcpy(&bb.to_servers[off], &bb.message[blk.word_begin - bb.word_begin], 4 * nw);
    for (std::size_t k = 0; k < blk.segments.size(); ++k)
      bb.to_servers[off + nw + k] = bb.message[bb.words + (tp_.segments[blk.segments[k]].layer - first)];
    off += blk.len();
  }
  comm_.alltoallv(as_bytes(Span<const uint32_t>(bb.to_servers)), Span<const int64_t>(tb.counts),
                  as_writable_bytes(Span<uint32_t>(bb.from_workers)));

  // Server: average the W copies of each own segment, add the server error, re-compress.
  const auto t0 = std::chrono::steady_clock::now();
  const TwoPhaseLayout::Block& mine = tb.blocks[rank_];
  const int64_t len = mine.len(), nw = mine.words();
  for (int64_t id : mine.segments) {
    const TwoPhaseLayout::Segment& s = tp_.segments[id];
    Span<float> p(p_.data() + s.server_offset, s.elems);
    codec::decode_add(Span<const uint32_t>(bb.from_workers), world_, len, s.word_begin - mine.word_begin, nw + s.slot,
                      Span<const float>(err_.data() + s.server_offset, s.elems), p, isa_);  // p = e + average
    codec::LayerBuffers lb;
    lb.grad = Span<const float>(p.data(), p.size());
    lb.words = Span<uint32_t>(bb.served.data() + (s.word_begin - mine.word_begin), s.word_end - s.word_begin);
    codec::CompressParams cp;
    cp.lr = 1.0f;  // lr * p == p exactly: compress_layer only packs and takes mean |p|
    bb.served[nw + s.slot] = float_to_bits(codec::compress_layer(lb, cp, isa_));
  }
  server_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // Phase 2: every rank gets every server's block.
  comm_.allgatherv(as_bytes(Span<const uint32_t>(bb.served)), Span<const int64_t>(tb.counts),
                   as_writable_bytes(Span<uint32_t>(bb.gathered)));
}

std::string SignExchange::nonfinite_reason() const {
  if (kind_ == ExchangeKind::kTwoPhase) {
    for (const TwoPhaseLayout::Segment& s : tp_.segments) {
      const int b = bucket_of_[s.layer];
      const TwoPhaseLayout::BucketBlocks& tb = tp_.buckets[b];
      const float v = bits_to_float(bb_[b].gathered[tb.gathered_at[s.chunk] + tb.blocks[s.chunk].words() + s.slot]);
      if (!std::isfinite(v))
        return fmt::format("non-finite gradient (NaN or Inf) in layer {} (its average, formed on rank {}, is not finite)",
                           s.layer, s.chunk);
    }
    return "";
  }
  // Report the lowest (rank, layer), as one message would.
  for (int w = 0; w < world_; ++w)
    for (int64_t l = 0; l < table_.num_layers(); ++l) {
      const int b = bucket_of_[l];
      const BucketBuffers& bb = bb_[b];
      const int64_t mw = static_cast<int64_t>(bb.message.size());
      if (!std::isfinite(bits_to_float(bb.recv[w * mw + bb.words + (l - buckets_[b].first)])))
        return fmt::format("non-finite gradient (NaN or Inf) on rank {} in layer {}", w, l);
    }
  return "";
}

void SignExchange::apply(int64_t layer, Span<float> param) {
  if (static_cast<int64_t>(param.size()) != table_.size(layer)) throw Error("SignExchange::apply: wrong size");
  const int b = bucket_of_[layer];
  const BucketBuffers& bb = bb_[b];
  if (kind_ == ExchangeKind::kTwoPhase) {
    const TwoPhaseLayout::BucketBlocks& tb = tp_.buckets[b];
    for (int64_t id : tp_.layer_segments[layer]) {
      const TwoPhaseLayout::Segment& s = tp_.segments[id];
      const TwoPhaseLayout::Block& blk = tb.blocks[s.chunk];
      const int64_t at = tb.gathered_at[s.chunk];
      codec::decode_blocks(Span<const uint32_t>(bb.gathered), 1, 0, at + (s.word_begin - blk.word_begin),
                           at + blk.words() + s.slot, param.subspan(s.elem_begin, s.elems),
                           /*apply=*/true, isa_);
    }
    return;
  }
  const int64_t mw = static_cast<int64_t>(bb.message.size());
  const int64_t word_offset = table_.word_offset(layer) - bb.word_begin;
  const int64_t scale_index = bb.words + (layer - buckets_[b].first);
  if (kind_ == ExchangeKind::kVote)
    codec::vote_apply(Span<const uint32_t>(bb.recv), world_, mw, word_offset, scale_index, param, isa_);
  else
    codec::decode_blocks(Span<const uint32_t>(bb.recv), world_, mw, word_offset, scale_index, param, true, isa_);
}

void SignExchange::commit() {
  if (kind_ != ExchangeKind::kTwoPhase) return;
  for (std::size_t b = 0; b < bb_.size(); ++b) {
    const TwoPhaseLayout::Block& mine = tp_.buckets[b].blocks[rank_];
    const int64_t nw = mine.words();
    for (int64_t id : mine.segments) {
      const TwoPhaseLayout::Segment& s = tp_.segments[id];
      codec::error_from_state(Span<const float>(p_.data() + s.server_offset, s.elems),
                              bits_to_float(bb_[b].served[nw + s.slot]),
                              Span<float>(err_.data() + s.server_offset, s.elems));
    }
  }
}

void SignExchange::reset() {
  std::fill(err_.begin(), err_.end(), 0.0f);
  std::fill(p_.begin(), p_.end(), 0.0f);
}

int64_t SignExchange::handed_bytes_per_step() const {
  int64_t total = 0;
  for (const BucketBuffers& bb : bb_) {
    if (kind_ != ExchangeKind::kTwoPhase) {
      total += 4 * static_cast<int64_t>(bb.message.size());
      continue;
    }
    total += 4 * static_cast<int64_t>(bb.to_servers.size()) + 4 * static_cast<int64_t>(bb.served.size());
  }
  return total;
}

int64_t SignExchange::wire_bytes_per_step() const {
  int64_t total = 0;
  if (kind_ == ExchangeKind::kTwoPhase) return tp_.wire_bytes();
  for (const BucketBuffers& bb : bb_)
    total += ring_allgather_wire_bytes(4 * static_cast<int64_t>(bb.message.size()), world_);
  return total;
}

double SignExchange::take_server_ms() {
  const double ms = server_ms_;
  server_ms_ = 0;
  return ms;
}

std::string SignExchange::describe() const {
  const char* what = kind_ == ExchangeKind::kTwoPhase ? "two-phase compressed allreduce (alltoallv + allgatherv)"
                     : kind_ == ExchangeKind::kVote   ? "majority vote over an allgather of packed signs"
                                                      : "allgather of packed signs";
  const std::string buckets = bb_.size() == 1 ? "" : fmt::format(", {} buckets", bb_.size());
  return fmt::format("{} ({}{})", what, comm_.backend(), buckets);
}

}  // namespace efsign
