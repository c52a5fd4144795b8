// efsign/exchange.h — how one step's gradients travel and come back as an update.
//
// SignExchange compresses each layer into the outgoing message through a codec, moves
// it over a communicator, and turns what came back into the update; DenseExchange does
// the same for the fp32 baseline. They know layers, words and scales, not tensors or
// devices, so the benchmark and the tests run the very same code as the trainer, on
// the host codec or the CUDA codec alike. The sign family's three exchanges:
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
//   e' is committed only when the step is applied (apply()); a skipped step leaves e
//   as it was, since the workers keep their whole p and will send it again.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "efsign/codec.h"
#include "efsign/communicator.h"
#include "efsign/layer_table.h"

namespace efsign {

enum class ExchangeKind { kAllgather, kTwoPhase, kVote };

ExchangeKind parse_exchange(const std::string& name);  // throws UsageError
std::string exchange_kind_name(ExchangeKind kind);     // "allgather", "two-phase", "vote"

// Layers [first, last), exchanged together.
struct Bucket {
  int64_t first = 0, last = 0;
};

// 4 MiB of fp32 gradient: big enough that per-call latency is amortised, small enough
// that the first bucket is ready well before backward ends. Measured side by side on the
// emulated 1 Gbit/s link (ResNet-18, 2 ranks, bench/NETEM.md): against DDP's 25 MB,
// sgdm's step 914 -> 724 ms and ef-signsgd's 659 -> 604 ms.
constexpr int64_t kDefaultBucketBytes = int64_t{4} << 20;

// Groups layers into buckets in reverse layer order (the order backward produces
// gradients): bucket 0 holds the last layers. A bucket closes once it holds at least
// `bucket_bytes` of fp32 gradient. bucket_bytes <= 0: one bucket of every layer.
std::vector<Bucket> make_buckets(const LayerTable& table, int64_t bucket_bytes);

// Note [two-phase]'s layout, from the layer table alone.
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

// One optimizer step's communication over ANY communicator and ANY codec (host or
// CUDA, efsign/codec.h). The optimizer binds its per-layer buffers once, points the
// grads every step (set_grad), then:
//   run(0), run(1), ...  encode bucket b's gradients and exchange them (collective;
//                        every rank runs the buckets in the same order)
//   finish()             "" if the step is finite everywhere, else why (the same
//                        string on every rank); the step's one host wait
//   apply()              the update, for every layer (not called for a skipped step)
// Buffers live in codec memory. When the communicator cannot reach it (a CUDA codec
// with an MPI communicator) every buffer it moves goes through pinned host staging
// buffers: copied down before the collective and up after it. With a device
// communicator (NCCL) the codec queues its work on the communicator's stream, so a
// step waits on the host only in finish(). wait_for/signal order the codec's stream
// after / before the caller's compute stream (no-ops for the host codec).
class GradientExchange {
 public:
  virtual ~GradientExchange();
  GradientExchange(const GradientExchange&) = delete;
  GradientExchange& operator=(const GradientExchange&) = delete;

  const LayerTable& table() const { return table_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int bucket_of(int64_t layer) const { return bucket_of_[layer]; }
  Communicator& communicator() { return *comm_; }
  Codec& codec() { return *codec_; }

  void set_grad(int64_t layer, const float* grad);
  void wait_for(void* stream);
  void signal(void* stream);
  virtual void run(int b) = 0;
  virtual std::string finish() = 0;
  virtual void apply() = 0;

  // Bytes this rank hands to the communicator / puts on the wire per step (formulas
  // from the layout; the communicator's counters measure the same from the buffers).
  virtual int64_t handed_bytes_per_step() const = 0;
  virtual int64_t wire_bytes_per_step() const = 0;
  virtual std::string describe() const = 0;

  // What run() and finish() measured since the last call: milliseconds of encoding
  // (compress, or copying into the flat buffer; with the two-phase server's work) and
  // of communication, and the communicator's counters over the collectives.
  struct Totals {
    double encode_ms = 0, comm_ms = 0;
    int64_t bytes_sent = 0, wire_bytes = 0, calls = 0;
  };
  Totals take_totals();

 protected:
  GradientExchange(const LayerTable& table, std::vector<Bucket> buckets, std::shared_ptr<Communicator> comm,
                   std::shared_ptr<Codec> codec);
  // A buffer the codec writes or reads and the communicator moves: codec memory, plus
  // a host staging copy when the communicator cannot reach codec memory.
  struct Staged {
    CodecBuffer dev, host;
    int64_t bytes = 0;
    template <typename T>
    T* codec_side() const { return dev.get<T>(); }
    template <typename T>
    T* comm_side() const { return host.get() ? host.get<T>() : dev.get<T>(); }
    Span<const std::byte> send_bytes() const { return {comm_side<const std::byte>(), static_cast<std::size_t>(bytes)}; }
    Span<std::byte> recv_bytes() const { return {comm_side<std::byte>(), static_cast<std::size_t>(bytes)}; }
  };
  Staged make_staged(int64_t bytes);
  void down(const Staged& s);  // the codec's result, to where the communicator reads it
  void up(const Staged& s);    // what the communicator wrote, to where the codec reads it
  // Runs one collective, adding the communicator's counters to the totals.
  template <typename Fn>
  void collective(Fn&& call) {
    const int64_t bytes0 = comm_->bytes_sent(), wire0 = comm_->wire_bytes(), calls0 = comm_->calls();
    call();
    totals_.bytes_sent += comm_->bytes_sent() - bytes0;
    totals_.wire_bytes += comm_->wire_bytes() - wire0;
    totals_.calls += comm_->calls() - calls0;
  }
  enum class Phase { kEncode, kComm };
  void start_timing();
  void lap(Phase phase);  // the time since the last mark belongs to `phase`
  void end_timing();      // adds the laps to the totals (after the step's host wait)
  // The step's host wait for a device communicator (its stream is the codec's).
  void synchronize(const char* what);
  LayerSet& compress_set(int b) { return *sets_[b]; }
  void set_compress_sets(std::vector<std::unique_ptr<LayerSet>> sets) { sets_ = std::move(sets); }

  LayerTable table_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;
  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<Codec> codec_;
  int world_ = 1, rank_ = 0;
  bool staged_ = false;       // messages go through host staging buffers
  bool device_comm_ = false;  // the communicator moves codec (device) memory on its stream
  Totals totals_;

 private:
  struct Timing;
  std::unique_ptr<Timing> timing_;
  std::vector<std::unique_ptr<LayerSet>> sets_;  // per bucket: the layers run(b) encodes
};

// The sign family: allgather, two-phase or vote (above). bind(): layers[l] holds
// layer l's param, momentum and state (grad and offsets are ignored), prev_scales L
// floats (the scale each layer sent last, read and written by compress), server_error
// server_elems() floats for two-phase (nullptr otherwise), all in codec memory and
// alive as long as the exchange.
class SignExchange final : public GradientExchange {
 public:
  SignExchange(ExchangeKind kind, const LayerTable& table, std::vector<Bucket> buckets,
               std::shared_ptr<Communicator> comm, std::shared_ptr<Codec> codec);
  ~SignExchange() override;

  ExchangeKind kind() const { return kind_; }
  int64_t server_elems() const { return layout_.server_elems; }
  void bind(const std::vector<CodecLayer>& layers, float* prev_scales, float* server_error);
  void set_params(const codec::CompressParams& params) { params_ = params; }

  void run(int b) override;
  std::string finish() override;
  void apply() override;  // and commits the two-phase server error
  int64_t handed_bytes_per_step() const override;
  int64_t wire_bytes_per_step() const override;
  std::string describe() const override;

 private:
  struct BucketBuffers;
  ExchangeKind kind_;
  TwoPhaseLayout layout_;
  codec::CompressParams params_;
  std::vector<BucketBuffers> bufs_;
  std::vector<uint32_t> verdict_;  // W*L scales (allgather, vote), one per segment (two-phase)
  CodecBuffer verdict_dev_, verdict_host_;
  float* prev_scales_ = nullptr;
  CodecBuffer server_p_;  // two-phase: p = e + average over this rank's chunk
};

// The uncompressed baseline (sgdm, optimizer.h): every bucket's gradients are copied
// into one flat fp32 buffer and summed by one allreduce per bucket; apply() divides by W and runs
// momentum SGD. finish() checks the summed gradient (identical bytes on every rank).
// bind(): layers[l] holds layer l's param and momentum (codec memory). The flat buffer
// holds, bucket after bucket, the bucket's elements in layer order, then one float per
// layer that says on how many ranks it had a gradient (4 bytes a layer on the wire):
// a layer that none had is not updated (torch.optim.SGD skips it).
class DenseExchange final : public GradientExchange {
 public:
  DenseExchange(const LayerTable& table, std::vector<Bucket> buckets, std::shared_ptr<Communicator> comm,
                std::shared_ptr<Codec> codec);
  ~DenseExchange() override;

  void bind(const std::vector<CodecLayer>& layers);
  void set_params(const SgdmParams& params) { params_ = params; }

  void run(int b) override;
  std::string finish() override;
  void apply() override;
  int64_t handed_bytes_per_step() const override;
  int64_t wire_bytes_per_step() const override;
  std::string describe() const override;

 private:
  struct Slice {
    int64_t first = 0, floats = 0;  // a bucket's part of the flat buffer
  };
  int64_t span_elems(const Bucket& k) const;
  SgdmParams params_;
  std::vector<Slice> slices_;
  Staged flat_;
  std::vector<std::unique_ptr<LayerSet>> update_sets_;
};

}  // namespace efsign
