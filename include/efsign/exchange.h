// efsign/exchange.h — how the sign family's messages travel and come back as an update.
//
// The optimizer compresses each layer into the outgoing message (words_of/set_scale),
// SignExchange moves it (exchange), and turns what came back into the update (apply).
// It knows layers, words and scales, not tensors, so the benchmark runs the very same
// code as the trainer. Three exchanges:
//
//   allgather   every rank receives every rank's message; x -= (1/W) sum_w s_w sign_w.
//               Each rank receives (W-1) d/8 bytes: the saving over an fp32 ring
//               allreduce (2 (W-1)/W 4d) shrinks with W and is gone at W = 64.
//   two-phase   compressed all-to-all, server-side error feedback, compressed
//               allgather (Note [two-phase]): about 2 (W-1)/W d/8 bytes for any W.
//   vote        the allgather's messages, majority vote: x -= mean_w(s_w) sign(sum_w sign_w)
//               (signSGD with majority vote, Bernstein et al. 2019; codec::vote_apply).
//
// Buckets: layers are exchanged in buckets (make_buckets), bucket 0 first. Without
// --overlap there is one bucket holding every layer: one message, one collective per
// phase, the wire format of Note [wire format]. With buckets, bucket b's message has
// the same layout over its own layers. Every exchange's result depends on layers and
// segments only, never on the buckets, so bucketing (and --overlap) changes no bit.
//
// Note [two-phase]
//   The words of all layers (a message without its scales) form one flat array of T
//   words, cut into W chunks of K = ceil(T / W) words: chunk c = [min(cK, T), min(cK + K, T))
//   belongs to rank c, its "server". A segment is the part of one layer inside one
//   chunk: whole words of one layer, so it lies in one bucket. Block (b, c) is the
//   words of bucket b inside chunk c followed by one float per segment in it, and
//   len(b, c) = words(b, c) + segments(b, c) (uint32 units).
//   Phase 1, alltoallv: every rank sends block (b, c) of its message to rank c, with
//     its layer's scale for each segment. Rank c decodes the W copies of each segment:
//       a = (1/W) sum_w s_w sign_w                        (rank order, as allgather)
//       p = e + a;  s = |p|_1 / n;  e' = p - s sign(p)    (server-side error feedback)
//     e is rank c's second, rank-local error buffer over its chunk (dist-EF-SGD,
//     DeepSpeed 1-bit Adam). n is the segment's element count.
//   Phase 2, allgatherv: rank c contributes block (b, c) = sign(p) words + s per
//     segment; every rank applies x = x - s sign(p) on every segment.
//   Wire bytes of rank r per step, summed over buckets b:
//       sum_{c != r} 4 len(b, c)  +  (W - 1) 4 len(b, r)  ~=  2 (W-1)/W d/8
//   With W = 1 this is allgather bit for bit: a = +-s, e = 0, p = a, mean |p| = s exactly.
//   e' is committed only when the step is applied (commit()); a skipped step leaves e
//   as it was, since the workers keep their whole p and will send it again.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "efsign/communicator.h"
#include "efsign/layer_table.h"
#include "efsign/sign_codec.h"

namespace efsign {

enum class ExchangeKind { kAllgather, kTwoPhase, kVote };

ExchangeKind parse_exchange(const std::string& name);  // throws UsageError
std::string exchange_kind_name(ExchangeKind kind);     // "allgather", "two-phase", "vote"

// Layers [first, last), exchanged together.
struct Bucket {
  int64_t first = 0, last = 0;
};

// PyTorch DDP's default bucket: big enough that per-call latency is amortised, small
// enough that the first bucket is ready well before backward ends.
constexpr int64_t kDefaultBucketBytes = int64_t{25} << 20;

// Groups layers into buckets in reverse layer order (the order backward produces
// gradients): bucket 0 holds the last layers. A bucket closes once it holds at least
// `bucket_bytes` of fp32 gradient. bucket_bytes <= 0: one bucket of every layer.
std::vector<Bucket> make_buckets(const LayerTable& table, int64_t bucket_bytes);

// Note [two-phase]'s layout, from the layer table alone: the CPU exchange below and
// the CUDA optimizer both build on it.
struct TwoPhaseLayout {
  struct Segment {
    int64_t layer, chunk;
    int64_t word_begin, word_end;  // flat word index
    int64_t elem_begin, elems;     // inside the layer
    int64_t slot;                  // index among its block's segments
    int64_t server_offset;         // element offset in the server state (own chunk only, else -1)
  };
  struct Block {  // the words of one bucket inside one chunk, then one scale per segment
    int64_t word_begin = 0, word_end = 0;
    std::vector<int64_t> segments;  // indices into `segments`, in word order
    int64_t words() const { return word_end - word_begin; }
    int64_t len() const { return words() + static_cast<int64_t>(segments.size()); }
  };
  struct BucketBlocks {
    std::vector<Block> blocks;        // one per chunk (rank)
    std::vector<int64_t> counts;      // bytes of block c
    std::vector<int64_t> gathered_at; // uint32 offset of block c after the allgatherv
    int64_t gathered_words = 0;
  };
  int world = 1, rank = 0;
  int64_t chunk_words = 0;  // K = ceil(T / W)
  std::vector<Segment> segments;
  std::vector<std::vector<int64_t>> layer_segments;  // per layer, in word order
  std::vector<BucketBlocks> buckets;
  int64_t server_elems = 0;  // elements of this rank's chunk, laid out in word order

  static TwoPhaseLayout build(const LayerTable& table, const std::vector<Bucket>& buckets, int world, int rank);
  // Wire bytes of this rank per step (Note [two-phase]).
  int64_t wire_bytes() const;
};

class SignExchange {
 public:
  SignExchange(ExchangeKind kind, const LayerTable& table, std::vector<Bucket> buckets, Communicator& comm,
               codec::Isa isa);

  ExchangeKind kind() const { return kind_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int bucket_of(int64_t layer) const { return bucket_of_[layer]; }
  // Where the caller compresses layer l before exchange(bucket_of(l)).
  Span<uint32_t> words_of(int64_t layer);
  void set_scale(int64_t layer, float scale);

  // Collective: exchanges bucket b. Every rank calls it for b = 0, 1, ... in order.
  void exchange(int b);
  // After every bucket's exchange: "" if every scale that came back is finite, else
  // why not; the same string on every rank (all ranks hold the same scales).
  std::string nonfinite_reason() const;
  // After every bucket's exchange: param = param - (layer l's update).
  void apply(int64_t layer, Span<float> param);
  // Two-phase: the step was applied, commit the server error e' (no-op otherwise).
  void commit();

  // Two-phase server error over this rank's chunk (empty otherwise), for checkpoints.
  Span<float> server_error() { return Span<float>(err_); }
  void reset();  // zeroes the server error

  // Bytes this rank hands to the communicator / puts on the wire per step (formulas
  // from the layout; the communicator's counters measure the same from the buffers).
  int64_t handed_bytes_per_step() const;
  int64_t wire_bytes_per_step() const;
  // Milliseconds of server work (two-phase decode + re-compress) since the last call.
  double take_server_ms();
  std::string describe() const;

 private:
  struct BucketBuffers {
    int64_t word_begin = 0, words = 0;  // flat words of the bucket
    std::vector<uint32_t> message;      // words + one scale per layer
    std::vector<uint32_t> recv;         // allgather/vote: W messages
    std::vector<uint32_t> to_servers, from_workers, served, gathered;  // two-phase
  };

  void exchange_two_phase(int b);

  ExchangeKind kind_;
  LayerTable table_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;
  Communicator& comm_;
  codec::Isa isa_;
  int world_, rank_;
  std::vector<BucketBuffers> bb_;
  TwoPhaseLayout tp_;
  std::vector<float> err_, p_;  // two-phase server state over this rank's chunk
  double server_ms_ = 0;
};

}  // namespace efsign
