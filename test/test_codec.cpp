// The wire format and the CPU codec (the specification of every other path).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "efsign/error.h"
#include "efsign/layer_table.h"
#include "efsign/sign_codec.h"
#include "test_util.h"

using namespace efsign;
using codec::Isa;

namespace {

std::vector<Isa> all_isas() {
  std::vector<Isa> v{Isa::kPortable};
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512})
    if (codec::isa_available(isa)) v.push_back(isa);
  return v;
}

// The SIMD paths this CPU has, each to be compared with the portable specification.
std::vector<Isa> simd_isas() {
  std::vector<Isa> v = all_isas();
  v.erase(v.begin());
  if (v.size() < 2) WARN("SKIPPED: this CPU lacks " << (v.empty() ? "AVX2 and AVX-512" : "AVX-512") << "; that path is not tested");
  return v;
}

std::vector<uint32_t> pack(const std::vector<float>& p, Isa isa) {
  std::vector<uint32_t> w(words_for(static_cast<int64_t>(p.size())), 0xdeadbeefu);
  codec::pack_signs(Span<const float>(p), Span<uint32_t>(w), isa);
  return w;
}

// Compress a plain vector (no EF, no wd) with the mean-|.| scale.
float compress_plain(const std::vector<float>& g, float lr, std::vector<uint32_t>& words, Isa isa) {
  words.assign(words_for(static_cast<int64_t>(g.size())), 0xffffffffu);
  codec::LayerBuffers b;
  b.grad = Span<const float>(g);
  b.words = Span<uint32_t>(words);
  codec::CompressParams cp;
  cp.lr = lr;
  return codec::compress_layer(b, cp, isa);
}

std::vector<float> random_vector(std::size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

}  // namespace

TEST_CASE("known vectors pack to known words, zeros count as +1, tail bits are 0", "[codec]") {
  for (Isa isa : all_isas()) {
    INFO("isa " << codec::isa_name(isa));
    CHECK(pack({-2.0f}, isa) == std::vector<uint32_t>{0u});
    CHECK(pack({0.0f}, isa) == std::vector<uint32_t>{1u});
    CHECK(pack({-0.0f}, isa) == std::vector<uint32_t>{1u});
    std::vector<float> alt31(31), alt32(32), neg33(33, -1.0f);
    for (int i = 0; i < 31; ++i) alt31[i] = (i % 2 == 0) ? 1.0f : -1.0f;
    for (int i = 0; i < 32; ++i) alt32[i] = (i % 2 == 0) ? 0.0f : -3.0f;
    neg33[32] = 5.0f;
    CHECK(pack(alt31, isa) == std::vector<uint32_t>{0x55555555u});
    CHECK(pack(alt32, isa) == std::vector<uint32_t>{0x55555555u});
    CHECK(pack(neg33, isa) == std::vector<uint32_t>{0u, 1u});
    std::vector<float> pos33(33, 1.0f);
    CHECK(pack(pos33, isa) == std::vector<uint32_t>{0xffffffffu, 1u});  // 31 tail bits stay 0
    // 1,000,003 elements: element i is non-negative iff (i * 7) % 11 < 5.
    const int64_t n = 1000003;
    std::vector<float> big(n);
    for (int64_t i = 0; i < n; ++i) big[i] = ((i * 7) % 11 < 5) ? static_cast<float>(i % 3) : -1.0f - (i % 5);
    const auto w = pack(big, isa);
    REQUIRE(w.size() == 31251u);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < 31251 * 32; ++i) {
      const bool bit = (w[i / 32] >> (i % 32)) & 1u;
      const bool want = i < n && (i * 7) % 11 < 5;
      mismatches += bit != want;
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("words are little-endian in the message bytes", "[codec]") {
  const auto w = pack({1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f, -1.0f, 1.0f}, Isa::kPortable);
  unsigned char bytes[4];
  std::memcpy(bytes, w.data(), 4);
  CHECK(bytes[0] == 0x01);
  CHECK(bytes[1] == 0x01);
  CHECK(bytes[2] == 0x00);
  CHECK(bytes[3] == 0x00);
}

TEST_CASE("-0.0, the smallest subnormals and values that round to zero", "[codec]") {
  const float tiny = std::numeric_limits<float>::denorm_min();
  for (Isa isa : all_isas()) {
    INFO("isa " << codec::isa_name(isa));
    CHECK(pack({-0.0f, tiny, -tiny, 0.0f, std::nanf("")}, isa) == std::vector<uint32_t>{0b01011u});
    // lr * g underflows to +0 or -0: both are p >= 0, so bit 1.
    std::vector<uint32_t> words;
    std::vector<float> g{1e-30f, -1e-30f, -1e30f, tiny};
    compress_plain(g, 1e-20f, words, isa);
    CHECK(words == std::vector<uint32_t>{0b1011u});
  }
}

TEST_CASE("scale is L1/d of p = lr*g + e", "[codec]") {
  for (Isa isa : all_isas()) {
    std::vector<uint32_t> words;
    CHECK(compress_plain({1.0f, -2.0f, 3.0f, -4.0f}, 1.0f, words, isa) == 2.5f);
    CHECK(words == std::vector<uint32_t>{0b0101u});
    CHECK(compress_plain({1.0f, -2.0f, 3.0f, -4.0f}, 0.5f, words, isa) == 1.25f);
  }
}

TEST_CASE("||C(v) - v||^2 = ||v||^2 - ||v||_1^2 / d", "[codec]") {
  for (std::size_t n : {1u, 31u, 33u, 1000u, 4097u}) {
    const auto v = random_vector(n, 7 + static_cast<uint32_t>(n));
    std::vector<uint32_t> words;
    const float s = compress_plain(v, 1.0f, words, codec::best_isa());
    double err2 = 0, l2 = 0, l1 = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double c = ((words[i / 32] >> (i % 32)) & 1u) ? s : -s;
      err2 += (c - v[i]) * (c - v[i]);
      l2 += double(v[i]) * v[i];
      l1 += std::fabs(v[i]);
    }
    CHECK(err2 == Approx(l2 - l1 * l1 / n).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("SIMD and portable paths give identical bytes and state", "[codec]") {
  for (Isa simd : simd_isas())
  for (int64_t n : {1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100, 4097, 100003}) {
    for (int flags = 0; flags < 8; ++flags) {
      const bool wd = flags & 4, mom = flags & 2, ef = flags & 1;
      INFO(codec::isa_name(simd) << " n " << n << " wd " << wd << " momentum " << mom << " ef " << ef);
      const auto x = random_vector(n, 1);
      std::vector<float> mom_a(n, 0.0f), mom_b(n, 0.0f), st_a(n, 0.0f), st_b(n, 0.0f);
      float s_a = 0, s_b = 0;
      for (int step = 0; step < 3; ++step) {
        auto g = random_vector(n, 100 + step, 0.1f);
        if (step == 1) g[0] = -0.0f;
        std::vector<uint32_t> wa(words_for(n)), wb(words_for(n));
        codec::CompressParams cp;
        cp.lr = 0.05f;
        cp.weight_decay = wd ? 5e-4f : 0.0f;
        cp.momentum = 0.9f;
        auto run = [&](Isa isa, std::vector<float>& m, std::vector<float>& st, float& s, std::vector<uint32_t>& w) {
          codec::LayerBuffers b;
          b.grad = Span<const float>(g);
          b.param = Span<const float>(x);
          if (mom) b.momentum = Span<float>(m);
          if (ef) b.state = Span<float>(st);
          b.prev_scale = s;
          b.words = Span<uint32_t>(w);
          s = codec::compress_layer(b, cp, isa);
        };
        run(Isa::kPortable, mom_a, st_a, s_a, wa);
        run(simd, mom_b, st_b, s_b, wb);
        REQUIRE(wa == wb);
        REQUIRE(std::memcmp(&s_a, &s_b, 4) == 0);
        REQUIRE(std::memcmp(st_a.data(), st_b.data(), 4 * n) == 0);
        REQUIRE(std::memcmp(mom_a.data(), mom_b.data(), 4 * n) == 0);
      }
    }
  }
}

TEST_CASE("error feedback: stored state rebuilds e = p - s*sign(p)", "[codec]") {
  // Two steps by hand: g = (1, -3), lr = 1. p1 = (1, -3), s1 = 2, e1 = (-1, -1).
  // Step 2 with g = (0.5, 0.5): p2 = e1 + g = (-0.5, -0.5), s2 = 0.5, e2 = (0, 0).
  std::vector<float> state(2, 0.0f), g1{1.0f, -3.0f}, g2{0.5f, 0.5f}, e(2);
  std::vector<uint32_t> w(1);
  codec::CompressParams cp;
  cp.lr = 1.0f;
  codec::LayerBuffers b;
  b.state = Span<float>(state);
  b.words = Span<uint32_t>(w);
  b.grad = Span<const float>(g1);
  const float s1 = codec::compress_layer(b, cp, codec::best_isa());
  CHECK(s1 == 2.0f);
  CHECK(w[0] == 0b01u);
  codec::error_from_state(Span<const float>(state), s1, Span<float>(e));
  CHECK(e == std::vector<float>{-1.0f, -1.0f});
  b.grad = Span<const float>(g2);
  b.prev_scale = s1;
  const float s2 = codec::compress_layer(b, cp, codec::best_isa());
  CHECK(s2 == 0.5f);
  CHECK(w[0] == 0b00u);
  codec::error_from_state(Span<const float>(state), s2, Span<float>(e));
  CHECK(e == std::vector<float>{0.0f, 0.0f});
}

TEST_CASE("layer table: word-aligned layers, scales after all words", "[codec]") {
  LayerTable t({1, 31, 32, 33, 1000003});
  CHECK(t.num_layers() == 5);
  CHECK(t.word_offset(0) == 0);
  CHECK(t.word_offset(1) == 1);
  CHECK(t.word_offset(2) == 2);
  CHECK(t.word_offset(3) == 3);
  CHECK(t.word_offset(4) == 5);
  CHECK(t.total_words() == 5 + 31251);
  CHECK(t.message_bytes() == 4 * (5 + 31251) + 4 * 5);
  CHECK(t.fp32_bytes() == 4 * (1 + 31 + 32 + 33 + 1000003));
  CHECK(LayerTable({1, 2}).hash() != LayerTable({2, 1}).hash());
  CHECK_THROWS(LayerTable({4, 0}));
}

TEST_CASE("decode-average of hand-made messages, in rank order", "[codec]") {
  // Two ranks, one layer of 3: rank 0 scale 1 signs (+,-,+); rank 1 scale 3 signs (+,+,-).
  LayerTable t({3});
  std::vector<uint32_t> msgs(2 * t.message_words());
  const float s0 = 1.0f, s1 = 3.0f;
  msgs[0] = 0b101u;
  std::memcpy(&msgs[1], &s0, 4);
  msgs[2] = 0b011u;
  std::memcpy(&msgs[3], &s1, 4);
  for (Isa isa : all_isas()) {
    std::vector<float> d(3), x{10.0f, 10.0f, 10.0f};
    codec::decode_average(Span<const uint32_t>(msgs), 2, t, 0, Span<float>(d), isa);
    CHECK(d == std::vector<float>{2.0f, 1.0f, -1.0f});
    codec::decode_average_apply(Span<const uint32_t>(msgs), 2, t, 0, Span<float>(x), isa);
    CHECK(x == std::vector<float>{8.0f, 9.0f, 11.0f});
  }
}

TEST_CASE("decode-average equals the mean of every rank's Delta", "[mpi][codec]") {
  auto& comm = test::world();
  const int W = comm.size();
  LayerTable t({1, 31, 33, 4097, 100003});
  std::vector<uint32_t> send(t.message_words()), recv(W * t.message_words());
  std::vector<float> delta(t.total_elements()), deltas(W * t.total_elements());
  for (int64_t l = 0; l < t.num_layers(); ++l) {
    auto g = random_vector(t.size(l), 1000 * comm.rank() + l, 1.0f + comm.rank());
    std::vector<uint32_t> w;
    const float s = compress_plain(g, 0.1f, w, codec::best_isa());
    std::copy(w.begin(), w.end(), send.begin() + t.word_offset(l));
    std::memcpy(&send[t.scale_offset_words() + l], &s, 4);
    for (int64_t i = 0; i < t.size(l); ++i)
      delta[t.elem_offset(l) + i] = ((w[i / 32] >> (i % 32)) & 1u) ? s : -s;
  }
  comm.allgather(as_bytes(Span<const uint32_t>(send)), as_writable_bytes(Span<uint32_t>(recv)));
  comm.allgather(as_bytes(Span<const float>(delta)), as_writable_bytes(Span<float>(deltas)));
  for (Isa isa : all_isas()) {
    int64_t mismatches = 0;
    for (int64_t l = 0; l < t.num_layers(); ++l) {
      std::vector<float> d(t.size(l));
      codec::decode_average(Span<const uint32_t>(recv), W, t, l, Span<float>(d), isa);
      for (int64_t i = 0; i < t.size(l); ++i) {
        float acc = 0.0f;
        for (int w = 0; w < W; ++w) acc += deltas[w * t.total_elements() + t.elem_offset(l) + i];
        const float mean = acc / static_cast<float>(W);
        mismatches += std::memcmp(&mean, &d[i], 4) != 0;
      }
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("SIMD decode equals the portable decode bit for bit, cached and streamed outputs", "[codec]") {
  // 2^20 + 37 floats is over the 4 MiB above which an aligned (32 bytes for AVX2, 64
  // for AVX-512) write-only output is written with non-temporal stores; 4097 is under
  // it; +37 leaves a partial word.
  for (Isa simd : simd_isas())
  for (int64_t n : {int64_t{4097}, int64_t{(1 << 20) + 37}}) {
    for (int W : {1, 2, 3, 4, 5}) {
      LayerTable t({n});
      std::vector<uint32_t> msgs(W * t.message_words());
      std::mt19937 rng(static_cast<uint32_t>(n + W));
      for (int w = 0; w < W; ++w) {
        for (int64_t i = 0; i < t.words(0); ++i) msgs[w * t.message_words() + i] = rng();
        const float s = 0.1f + 0.37f * static_cast<float>(w);  // non-trivial sums, rounded
        std::memcpy(&msgs[w * t.message_words() + t.scale_offset_words()], &s, 4);
      }
      // One 64-byte aligned buffer; offset 0 takes the streaming path, offset 1 (4 bytes
      // off alignment) the ordinary stores.
      std::vector<float> backing(n + 64);
      float* aligned = backing.data();
      while (reinterpret_cast<uintptr_t>(aligned) % 64 != 0) ++aligned;
      for (int offset : {0, 1}) {
        INFO(codec::isa_name(simd) << " n " << n << " W " << W << " offset " << offset);
        Span<float> out(aligned + offset, n);
        std::vector<float> want(n), want_x(n), got_x(n);
        for (int64_t i = 0; i < n; ++i) want_x[i] = got_x[i] = static_cast<float>(i % 97) * 0.25f;
        std::fill(out.begin(), out.end(), -7.0f);
        codec::decode_average(Span<const uint32_t>(msgs), W, t, 0, Span<float>(want), Isa::kPortable);
        codec::decode_average(Span<const uint32_t>(msgs), W, t, 0, out, simd);
        REQUIRE(std::memcmp(want.data(), out.data(), 4 * n) == 0);
        codec::decode_average_apply(Span<const uint32_t>(msgs), W, t, 0, Span<float>(want_x), Isa::kPortable);
        codec::decode_average_apply(Span<const uint32_t>(msgs), W, t, 0, Span<float>(got_x), simd);
        REQUIRE(std::memcmp(want_x.data(), got_x.data(), 4 * n) == 0);
      }
    }
  }
}

TEST_CASE("SIMD vote equals the portable vote bit for bit", "[codec]") {
  for (Isa simd : simd_isas())
  for (int64_t n : {int64_t{1}, int64_t{31}, int64_t{4097}, int64_t{100003}}) {
    for (int W : {1, 2, 3, 4, 5}) {
      INFO(codec::isa_name(simd) << " n " << n << " W " << W);
      // W blocks of words_for(n) words + 1 scale, 3 words of slack between blocks.
      const int64_t nw = words_for(n), stride = nw + 4;
      std::vector<uint32_t> blocks(W * stride);
      std::mt19937 rng(static_cast<uint32_t>(7 * n + W));
      for (int w = 0; w < W; ++w) {
        // Half the words random, half equal across ranks (so even W has ties and majorities).
        for (int64_t i = 0; i < nw; ++i) blocks[w * stride + i] = (i % 2) ? rng() : 0x0f0f3c3cu * (i % 7);
        const float s = 0.01f + 0.003f * static_cast<float>(w);
        std::memcpy(&blocks[w * stride + nw], &s, 4);
      }
      const auto x0 = random_vector(static_cast<std::size_t>(n), 5);
      std::vector<float> want = x0, got = x0;
      codec::vote_apply(Span<const uint32_t>(blocks), W, stride, 0, nw, Span<float>(want), Isa::kPortable);
      codec::vote_apply(Span<const uint32_t>(blocks), W, stride, 0, nw, Span<float>(got), simd);
      REQUIRE(std::memcmp(want.data(), got.data(), 4 * n) == 0);
      int64_t unchanged = 0;
      for (int64_t i = 0; i < n; ++i) unchanged += want[i] == x0[i];
      if (W % 2 == 0 && n > 64) CHECK(unchanged > 0);  // some ties
      if (W % 2 == 1) CHECK(unchanged == 0);           // odd W never ties
    }
  }
}

TEST_CASE("decode_add is addend + decode-average on every path, special scales, offset words", "[codec]") {
  // Scales a real message can carry besides ordinary ones: 0, -0, subnormal, huge,
  // +-Inf. (NaN is excluded: the step is skipped and NaN bits are unspecified,
  // Note [bit-exact arithmetic].)
  const float specials[] = {0.0f, -0.0f, 1e-45f, 3e38f, std::numeric_limits<float>::infinity(), -2.5f, 0.125f};
  for (Isa isa : all_isas())
  for (int64_t n : {int64_t{5}, int64_t{32 * 40 + 7}, int64_t{(1 << 20) + 3}}) {
    for (int W : {1, 2, 3}) {
      INFO(codec::isa_name(isa) << " n " << n << " W " << W);
      // Blocks of stride words: 3 words of something else, then the signs, then the scale.
      const int64_t nw = words_for(n), off = 3, stride = off + nw + 1;
      std::vector<uint32_t> blocks(W * stride);
      std::mt19937 rng(static_cast<uint32_t>(n * 31 + W));
      for (auto& b : blocks) b = rng();
      for (int w = 0; w < W; ++w) {
        const float s = specials[(n + 3 * w) % 7];
        std::memcpy(&blocks[w * stride + off + nw], &s, 4);
      }
      const auto e = random_vector(static_cast<std::size_t>(n), 9);
      std::vector<float> avg(n), want(n), got(n, -1.0f), portable(n, -1.0f);
      codec::decode_blocks(Span<const uint32_t>(blocks), W, stride, off, off + nw, Span<float>(avg), false, isa);
      for (int64_t i = 0; i < n; ++i) want[i] = e[i] + avg[i];
      codec::decode_add(Span<const uint32_t>(blocks), W, stride, off, off + nw, Span<const float>(e), Span<float>(got),
                        isa);
      codec::decode_add(Span<const uint32_t>(blocks), W, stride, off, off + nw, Span<const float>(e),
                        Span<float>(portable), Isa::kPortable);
      // Byte comparison where both are numbers; where Inf - Inf made a NaN, both must be NaN.
      int64_t mismatches = 0;
      for (int64_t i = 0; i < n; ++i) {
        const bool nan = std::isnan(want[i]);
        mismatches += nan ? !(std::isnan(got[i]) && std::isnan(portable[i]))
                          : (std::memcmp(&want[i], &got[i], 4) != 0 || std::memcmp(&want[i], &portable[i], 4) != 0);
      }
      CHECK(mismatches == 0);
    }
  }
  std::vector<uint32_t> one(2, 0u);
  std::vector<float> a(4), b(3);
  CHECK_THROWS_AS(codec::decode_add(Span<const uint32_t>(one), 1, 2, 0, 1, Span<const float>(a), Span<float>(b),
                                    Isa::kPortable),
                  Error);
  CHECK_THROWS_AS(codec::decode_add(Span<const uint32_t>(one), 1, 2, 0, 1, Span<const float>(a.data() + 1, 3),
                                    Span<float>(a.data(), 3), Isa::kPortable),
                  Error);
}
