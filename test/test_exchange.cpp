// The exchanges (efsign/exchange.h): bucketing, the codec's block decode and vote,
// two-phase against allgather on one rank, and under mpirun ([mpi], 2/3/4 ranks):
// identical replicas, exact byte formulas, overlap changing no bit, non-finite skips.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "efsign/error.h"
#include "efsign/exchange.h"
#include "efsign/models.h"
#include "efsign/optimizer.h"
#include "efsign/sign_codec.h"
#include "test_torch_util.h"

using namespace efsign;
using efsign::test::bytes_of;
using efsign::test::make_params;
using efsign::test::same_on_all_ranks;
using efsign::test::world;
using efsign::codec::float_to_bits;

namespace {

OptimizerConfig config(OptimizerKind kind, ExchangeKind ex, double lr = 0.05) {
  OptimizerConfig c;
  c.kind = kind;
  c.lr = lr;
  c.exchange = ex;
  return c;
}

// Rank-dependent gradients, a function of (seed, step, rank).
void set_grads(std::vector<at::Tensor>& params, int step, int rank) {
  torch::manual_seed(1000 * step + rank + 7);
  for (std::size_t l = 0; l < params.size(); ++l)
    params[l].mutable_grad() = torch::randn_like(params[l]) * (1.0 + static_cast<double>(l));
}

// Uneven layers: a large one split across chunks, tiny ones sharing a chunk.
const std::vector<int64_t> kSizes = {5000, 3, 64, 1, 777, 4096, 33, 10};

// Two-phase wire bytes of `rank` from first principles (Note [two-phase]), one bucket.
int64_t two_phase_wire_formula(const LayerTable& t, int W, int rank, int64_t* segs_of_rank = nullptr) {
  const int64_t T = t.total_words(), K = (T + W - 1) / W;
  int64_t total = 0;
  for (int c = 0; c < W; ++c) {
    const int64_t c0 = std::min(c * K, T), c1 = std::min(c * K + K, T);
    int64_t segs = 0;
    for (int64_t l = 0; l < t.num_layers(); ++l) {
      const int64_t w0 = t.word_offset(l), w1 = w0 + t.words(l);
      if (std::max(w0, c0) < std::min(w1, c1)) ++segs;
    }
    const int64_t len = (c1 - c0) + segs;
    if (c == rank) {
      total += (W - 1) * 4 * len;
      if (segs_of_rank) *segs_of_rank = segs;
    } else {
      total += 4 * len;
    }
  }
  return total;
}

// Mean |v| as the codec takes it: 32 double lanes (lane = i % 32), halving tree.
float mean_abs(const float* v, int64_t n) {
  double lane[32] = {};
  for (int64_t i = 0; i < n; ++i) lane[i % 32] += std::fabs(static_cast<double>(v[i]));
  for (int w = 16; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) lane[i] = lane[i] + lane[i + w];
  return static_cast<float>(lane[0] / static_cast<double>(n));
}

// A plain re-statement of EF-SignSGD + two-phase / vote for all W ranks in one
// process (every rank's gradients are a function of (step, rank), so each rank can
// simulate all of them). Written from Note [two-phase], not from the library's code.
struct Reference {
  Reference(const std::vector<at::Tensor>& x0, int W, ExchangeKind ex, float lr) : W(W), ex(ex), lr(lr) {
    for (const auto& p : x0) {
      x.push_back(std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel()));
      sizes.push_back(p.numel());
    }
    c.assign(W, {});
    sp.assign(W, std::vector<float>(sizes.size(), 0.0f));
    for (int w = 0; w < W; ++w)
      for (int64_t n : sizes) c[w].push_back(std::vector<float>(n, 0.0f));
    for (int64_t n : sizes) e2.push_back(std::vector<float>(n, 0.0f));
  }
  void step(int t) {
    const LayerTable table(sizes);
    const int64_t T = table.total_words(), K = (T + W - 1) / W;
    std::vector<std::vector<std::vector<float>>> p(W);  // p[w][l]
    std::vector<std::vector<float>> s(W, std::vector<float>(sizes.size()));
    for (int w = 0; w < W; ++w) {
      auto params = make_params(sizes, 0);  // shapes only
      set_grads(params, t, w);
      for (std::size_t l = 0; l < sizes.size(); ++l) {
        const float* g = params[l].grad().data_ptr<float>();
        std::vector<float> pl(sizes[l]);
        for (int64_t i = 0; i < sizes[l]; ++i) {
          const float cv = c[w][l][i];
          const float e = cv - (cv >= 0.0f ? sp[w][l] : -sp[w][l]);
          pl[i] = e + lr * g[i];
          c[w][l][i] = pl[i];
        }
        s[w][l] = mean_abs(pl.data(), sizes[l]);
        sp[w][l] = s[w][l];
        p[w].push_back(std::move(pl));
      }
    }
    for (std::size_t l = 0; l < sizes.size(); ++l) {
      const int64_t n = sizes[l];
      if (ex == ExchangeKind::kVote) {
        float sum = 0.0f;
        for (int w = 0; w < W; ++w) sum += s[w][l];
        const float mean = sum / static_cast<float>(W);
        for (int64_t i = 0; i < n; ++i) {
          int margin = 0;
          for (int w = 0; w < W; ++w) margin += p[w][l][i] >= 0.0f ? 1 : -1;
          if (margin > 0) x[l][i] = x[l][i] - mean;
          if (margin < 0) x[l][i] = x[l][i] + mean;
        }
        continue;
      }
      // Two-phase: segments are runs of elements whose word falls in the same chunk.
      int64_t i0 = 0;
      while (i0 < n) {
        const int64_t chunk = (table.word_offset(static_cast<int64_t>(l)) + i0 / 32) / K;
        int64_t i1 = i0;
        while (i1 < n && (table.word_offset(static_cast<int64_t>(l)) + i1 / 32) / K == chunk) ++i1;
        std::vector<float> p2(i1 - i0);
        for (int64_t i = i0; i < i1; ++i) {
          float acc = 0.0f;
          for (int w = 0; w < W; ++w) acc += p[w][l][i] >= 0.0f ? s[w][l] : -s[w][l];
          p2[i - i0] = e2[l][i] + acc / static_cast<float>(W);
        }
        const float s2 = mean_abs(p2.data(), i1 - i0);
        for (int64_t i = i0; i < i1; ++i) {
          const float q = p2[i - i0] >= 0.0f ? s2 : -s2;
          x[l][i] = x[l][i] - q;
          e2[l][i] = p2[i - i0] - q;
        }
        i0 = i1;
      }
    }
  }
  int W;
  ExchangeKind ex;
  float lr;
  std::vector<int64_t> sizes;
  std::vector<std::vector<float>> x, e2;
  std::vector<std::vector<std::vector<float>>> c;
  std::vector<std::vector<float>> sp;
};

}  // namespace

TEST_CASE("buckets: reverse layer order, every layer once, at least bucket_bytes each but the last", "[exchange]") {
  const LayerTable t(kSizes);
  const auto one = make_buckets(t, 0);
  REQUIRE(one.size() == 1);
  CHECK(one[0].first == 0);
  CHECK(one[0].last == t.num_layers());
  const auto bs = make_buckets(t, 4 * 4000);
  REQUIRE(bs.size() >= 2);
  int64_t expect_last = t.num_layers();
  for (std::size_t b = 0; b < bs.size(); ++b) {
    CHECK(bs[b].last == expect_last);  // bucket 0 holds the last layers
    CHECK(bs[b].first < bs[b].last);
    int64_t bytes = 0;
    for (int64_t l = bs[b].first; l < bs[b].last; ++l) bytes += 4 * t.size(l);
    if (b + 1 < bs.size()) CHECK(bytes >= 4 * 4000);
    expect_last = bs[b].first;
  }
  CHECK(expect_last == 0);
  CHECK(make_buckets(t, 1).size() == kSizes.size());  // one layer per bucket
}

TEST_CASE("exchange names parse and bad ones are usage errors", "[exchange]") {
  CHECK(parse_exchange("two-phase") == ExchangeKind::kTwoPhase);
  CHECK(exchange_kind_name(parse_exchange("vote")) == "vote");
  CHECK_THROWS_AS(parse_exchange("ring"), UsageError);
}

TEST_CASE("vote: majority of signs times the mean scale; a tie leaves the element alone", "[exchange]") {
  // Three blocks of [1 word | 1 scale]: bits for elements 0..3.
  //   element:   0     1     2     3
  //   rank 0:    +     +     -     -
  //   rank 1:    +     -     -     +
  //   rank 2:    +     -     -     +
  const std::vector<uint32_t> blocks = {0b0011u, float_to_bits(1.0f), 0b1001u, float_to_bits(2.0f),
                                        0b1001u, float_to_bits(4.0f)};
  for (codec::Isa isa : {codec::Isa::kPortable, codec::Isa::kAvx2, codec::Isa::kAvx512}) {
  if (!codec::isa_available(isa)) continue;
  INFO(codec::isa_name(isa));
  std::vector<float> x(4, 10.0f);
  codec::vote_apply(Span<const uint32_t>(blocks), 3, 2, 0, 1, Span<float>(x), isa);
  const float mean = (0.0f + 1.0f + 2.0f + 4.0f) / 3.0f;
  CHECK(x[0] == 10.0f - mean);
  CHECK(x[1] == 10.0f + mean);
  CHECK(x[2] == 10.0f + mean);
  CHECK(x[3] == 10.0f - mean);
  // Two ranks disagreeing: a tie, no move.
  std::vector<float> y(4, 1.0f);
  codec::vote_apply(Span<const uint32_t>(blocks), 2, 2, 0, 1, Span<float>(y), isa);
  CHECK(y[0] == 1.0f - 1.5f);
  CHECK(y[1] == 1.0f);
  CHECK(y[2] == 1.0f + 1.5f);
  CHECK(y[3] == 1.0f);
  CHECK_THROWS_AS(codec::vote_apply(Span<const uint32_t>(blocks), 4, 2, 0, 1, Span<float>(y), isa), Error);
  }
}

TEST_CASE("decode_blocks over a message array equals decode_average", "[exchange]") {
  const LayerTable t({100, 37});
  std::mt19937 rng(3);
  std::vector<uint32_t> msgs(3 * t.message_words());
  for (auto& w : msgs) w = rng();
  for (int r = 0; r < 3; ++r)
    for (int64_t l = 0; l < 2; ++l)
      msgs[r * t.message_words() + t.scale_offset_words() + l] = float_to_bits(0.5f + r + l);
  for (int64_t l = 0; l < 2; ++l) {
    std::vector<float> a(t.size(l)), b(t.size(l));
    codec::decode_average(Span<const uint32_t>(msgs), 3, t, l, Span<float>(a), codec::best_isa());
    codec::decode_blocks(Span<const uint32_t>(msgs), 3, t.message_words(), t.word_offset(l),
                         t.scale_offset_words() + l, Span<float>(b), false, codec::Isa::kPortable);
    CHECK(std::memcmp(a.data(), b.data(), 4 * a.size()) == 0);
  }
  std::vector<float> out(100);
  CHECK_THROWS_AS(codec::decode_blocks(Span<const uint32_t>(msgs), 4, t.message_words(), 0, 0, Span<float>(out), false,
                                       codec::Isa::kPortable),
                  Error);
}

TEST_CASE("one rank: two-phase equals allgather bit for bit, and its server error stays zero", "[exchange]") {
  for (OptimizerKind kind : {OptimizerKind::kEfSignSgd, OptimizerKind::kSignSgd, OptimizerKind::kSignum}) {
    auto self = std::make_shared<SelfCommunicator>();
    auto pa = make_params(kSizes, 5), pb = make_params(kSizes, 5);
    auto a = make_optimizer(pa, self, self, config(kind, ExchangeKind::kAllgather));
    auto b = make_optimizer(pb, self, self, config(kind, ExchangeKind::kTwoPhase));
    for (int s = 0; s < 20; ++s) {
      set_grads(pa, s, 0);
      set_grads(pb, s, 0);
      a->step();
      b->step();
    }
    CHECK(bytes_of(pa) == bytes_of(pb));
    bool has_server = false;
    for (auto& [name, t] : b->state_tensors())
      if (name == "server_error") {
        has_server = true;
        CHECK(t.abs().max().item<float>() == 0.0f);
      }
    CHECK(has_server);
  }
}

TEST_CASE("every exchange: replicas bit-identical after 30 steps", "[mpi][exchange]") {
  auto& comm = world();
  for (ExchangeKind ex : {ExchangeKind::kAllgather, ExchangeKind::kTwoPhase, ExchangeKind::kVote})
    for (OptimizerKind kind : {OptimizerKind::kEfSignSgd, OptimizerKind::kSignum}) {
      auto params = make_params(kSizes, 11);
      const auto before = bytes_of(params);
      auto opt = make_optimizer(params, test::world_ptr(), test::world_ptr(), config(kind, ex));
      for (int s = 0; s < 30; ++s) {
        set_grads(params, s, comm.rank());
        opt->step();
        REQUIRE_FALSE(opt->last_step().skipped);
      }
      INFO("exchange " << exchange_kind_name(ex) << ", optimizer " << optimizer_name(kind));
      CHECK(same_on_all_ranks(bytes_of(params)));
      CHECK(bytes_of(params) != before);
    }
}

TEST_CASE("two-phase and vote equal a plain re-statement of the algorithm, bit for bit", "[mpi][exchange]") {
  auto& comm = world();
  for (ExchangeKind ex : {ExchangeKind::kTwoPhase, ExchangeKind::kVote}) {
    auto params = make_params(kSizes, 9);
    Reference ref(params, comm.size(), ex, 0.05f);
    auto opt = make_optimizer(params, test::world_ptr(), test::world_ptr(), config(OptimizerKind::kEfSignSgd, ex, 0.05));
    for (int t = 0; t < 6; ++t) {
      set_grads(params, t, comm.rank());
      opt->step();
      ref.step(t);
    }
    INFO("exchange " << exchange_kind_name(ex));
    int64_t wrong = 0;
    for (std::size_t l = 0; l < params.size(); ++l)
      for (int64_t i = 0; i < params[l].numel(); ++i)
        wrong += std::memcmp(params[l].data_ptr<float>() + i, &ref.x[l][i], 4) != 0;
    CHECK(wrong == 0);
    if (ex == ExchangeKind::kTwoPhase && comm.size() > 1) {  // the server error is really in use
      double e_norm = 0;
      for (auto& e : ref.e2)
        for (float v : e) e_norm += std::fabs(v);
      CHECK(e_norm > 0);
    }
  }
}

TEST_CASE("two-phase: bytes per rank follow the exact formula and do not grow with W", "[mpi][exchange]") {
  auto& comm = world();
  const int W = comm.size(), r = comm.rank();
  // A ResNet-sized layer mix would be slow here; this one still splits layers across chunks.
  std::vector<int64_t> sizes;
  for (int i = 0; i < 12; ++i) sizes.push_back(i % 3 == 0 ? 20000 + 97 * i : 64 + i);
  const LayerTable t(sizes);
  auto params = make_params(sizes, 3);
  auto opt = make_optimizer(params, test::world_ptr(), test::world_ptr(), config(OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase));
  set_grads(params, 0, r);
  opt->step();
  const StepStats& st = opt->last_step();
  int64_t segs_r = 0;
  const int64_t want = two_phase_wire_formula(t, W, r, &segs_r);
  CHECK(st.wire_bytes == want);                       // counted by the communicator from its buffers
  CHECK(opt->wire_bytes_per_step() == want);       // what the trainer reports up front
  CHECK(st.calls == 2);                               // one alltoallv, one allgatherv
  // Handed: the whole all-to-all buffer plus this rank's served block.
  const int64_t T = t.total_words(), K = (T + W - 1) / W;
  const int64_t own_words = std::min((r + 1) * K, T) - std::min(r * K, T);
  int64_t all_segs = 0;
  for (int c = 0; c < W; ++c) {
    int64_t s = 0;
    two_phase_wire_formula(t, W, c, &s);
    all_segs += s;
  }
  CHECK(st.bytes_sent == 4 * (T + all_segs) + 4 * (own_words + segs_r));
  // Independent of W: 2 (W-1)/W of the sign bytes, plus scales and chunk rounding.
  const double ideal = 2.0 * (W - 1) / W * 4.0 * static_cast<double>(T);
  const double overhead = static_cast<double>(st.wire_bytes) - ideal;
  CHECK(overhead >= -4.0 * W);
  CHECK(overhead <= 4.0 * (W - 2) + 4.0 * (t.num_layers() + W - 1) + 4.0 * (W - 1) * segs_r);
  CHECK(static_cast<double>(st.wire_bytes) <= 2.0 * 4.0 * static_cast<double>(T) * 1.01);
  // Allgather for comparison: (W-1) whole messages, growing with W.
  auto params2 = make_params(sizes, 3);
  auto ag = make_optimizer(params2, test::world_ptr(), test::world_ptr(), config(OptimizerKind::kEfSignSgd, ExchangeKind::kAllgather));
  set_grads(params2, 0, r);
  ag->step();
  CHECK(ag->last_step().wire_bytes == (W - 1) * t.message_bytes());
  CHECK(ag->last_step().bytes_sent == t.message_bytes());
  if (W >= 3) CHECK(st.wire_bytes < ag->last_step().wire_bytes);
}

TEST_CASE("--overlap: buckets start during backward and the result is the same bits", "[mpi][exchange]") {
  auto& comm = world();
  for (ExchangeKind ex : {ExchangeKind::kAllgather, ExchangeKind::kTwoPhase, ExchangeKind::kVote}) {
    std::vector<uint8_t> result[2];
    int64_t early = 0, buckets = 0;
    for (int overlap = 0; overlap < 2; ++overlap) {
      torch::manual_seed(21);
      auto model = make_model("mlp", ModelSpec{});
      OptimizerConfig cfg = config(OptimizerKind::kEfSignSgd, ex, 0.1);
      cfg.overlap = overlap == 1;
      cfg.bucket_bytes = 4 << 10;  // three buckets for the MLP
      auto opt = make_optimizer(model->parameters(), test::world_ptr(), test::world_ptr(), cfg);
      for (int s = 0; s < 6; ++s) {
        torch::manual_seed(100 * s + comm.rank());
        const at::Tensor x = torch::randn({16, 1, 28, 28});
        const at::Tensor y = torch::randint(0, 10, {16});
        model->zero_grad();
        torch::nn::functional::cross_entropy(model->forward(x), y).backward();
        opt->step();
        if (overlap) {
          early += opt->last_step().buckets_started_in_backward;
          buckets += opt->last_step().buckets;
        }
      }
      result[overlap] = bytes_of(model->parameters());
    }
    INFO("exchange " << exchange_kind_name(ex));
    CHECK(buckets >= 6 * 3);
    CHECK(early == buckets);  // every parameter has a gradient: all buckets start in backward
    CHECK(result[0] == result[1]);
    CHECK(same_on_all_ranks(result[1]));
  }
}

TEST_CASE("--overlap without autograd (no hooks fire): step() exchanges every bucket itself", "[mpi][exchange]") {
  auto& comm = world();
  auto pa = make_params(kSizes, 8), pb = make_params(kSizes, 8);
  OptimizerConfig cfg = config(OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase);
  auto a = make_optimizer(pa, test::world_ptr(), test::world_ptr(), cfg);
  cfg.overlap = true;
  cfg.bucket_bytes = 4 * 500;  // three buckets
  auto b = make_optimizer(pb, test::world_ptr(), test::world_ptr(), cfg);
  for (int s = 0; s < 5; ++s) {
    set_grads(pa, s, comm.rank());
    set_grads(pb, s, comm.rank());
    a->step();
    b->step();
    CHECK(b->last_step().buckets_started_in_backward == 0);
  }
  CHECK(b->last_step().buckets >= 3);
  CHECK(bytes_of(pa) == bytes_of(pb));
  // The server error has one layout whatever the buckets (checkpoints move between them).
  auto server_of = [](DistributedOptimizer& o) {
    for (auto& [name, t] : o.state_tensors())
      if (name == "server_error") return bytes_of({t});
    return std::vector<uint8_t>{};
  };
  CHECK(!server_of(*a).empty());
  CHECK(server_of(*a) == server_of(*b));
}

TEST_CASE("two-phase and vote: a NaN on one rank makes every rank skip; the server error is kept", "[mpi][exchange]") {
  auto& comm = world();
  for (ExchangeKind ex : {ExchangeKind::kTwoPhase, ExchangeKind::kVote}) {
    auto params = make_params(kSizes, 4);
    auto opt = make_optimizer(params, test::world_ptr(), test::world_ptr(), config(OptimizerKind::kEfSignSgd, ex));
    for (int s = 0; s < 3; ++s) {
      set_grads(params, s, comm.rank());
      opt->step();
    }
    std::vector<at::Tensor> server_before;
    for (auto& [name, t] : opt->state_tensors())
      if (name == "server_error") server_before.push_back(t.clone());
    const auto before = bytes_of(params);
    set_grads(params, 3, comm.rank());
    if (comm.rank() == comm.size() - 1) params[4].mutable_grad()[5] = std::numeric_limits<float>::quiet_NaN();
    opt->step();
    INFO("exchange " << exchange_kind_name(ex));
    CHECK(opt->last_step().skipped);
    CHECK_THAT(opt->last_step().skip_reason, Catch::Contains("layer 4"));
    CHECK(bytes_of(params) == before);
    for (auto& [name, t] : opt->state_tensors())
      if (name == "server_error") {
        REQUIRE(server_before.size() == 1);
        CHECK(bytes_of({t}) == bytes_of({server_before[0]}));
      }
    set_grads(params, 4, comm.rank());
    opt->step();
    CHECK_FALSE(opt->last_step().skipped);
    CHECK(same_on_all_ranks(bytes_of(params)));
    for (auto& p : params) CHECK(torch::isfinite(p).all().item<bool>());
  }
}

TEST_CASE("sgdm rejects --exchange: it always allreduces fp32", "[exchange]") {
  auto self = std::make_shared<SelfCommunicator>();
  auto params = make_params({10}, 1);
  OptimizerConfig cfg = config(OptimizerKind::kSgdm, ExchangeKind::kTwoPhase);
  CHECK_THROWS_AS(make_optimizer(params, self, self, cfg), UsageError);
}
