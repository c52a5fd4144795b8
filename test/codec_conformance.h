// test/codec_conformance.h — checks every implementation of efsign/codec.h must pass
// against the host codec (the specification): run by test_device_codec.cpp on the
// emulated CUDA codec in every CI run, and by test_gpu.cpp on a real GPU.
#pragma once

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "efsign/codec.h"
#include "efsign/exchange.h"
#include "efsign/optimizer.h"
#include "test_torch_util.h"

namespace efsign::test {

// Host copies of a codec's memory.
inline std::vector<float> to_host(Codec& c, const CodecBuffer& b, int64_t n) {
  std::vector<float> out(static_cast<std::size_t>(n));
  c.copy(out.data(), b.get(), 4 * n);
  c.synchronize();
  return out;
}
inline CodecBuffer from_host(Codec& c, const std::vector<float>& v) {
  CodecBuffer b = c.allocate(4 * static_cast<int64_t>(v.size()));
  c.copy(b.get(), v.data(), 4 * static_cast<int64_t>(v.size()));
  c.synchronize();
  return b;
}

// Every value a small multiple of 1/16 (|v| <= 8): exact sums, so both codecs' scales
// are bit-identical whatever their reduction order.
inline std::vector<float> dyadic(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> k(-128, 128);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = static_cast<float>(k(rng)) / 16.0f;
  return v;
}

inline bool one_ulp(float a, float b) { return a == b || std::nextafter(a, b) == b; }

inline OptimizerConfig config(OptimizerKind kind, ExchangeKind ex, double lr, bool overlap = false) {
  OptimizerConfig c;
  c.kind = kind;
  c.exchange = ex;
  c.lr = lr;
  c.weight_decay = 1.0 / 64;
  c.overlap = overlap;
  c.bucket_bytes = 4 << 10;
  return c;
}

struct Run {
  std::vector<at::Tensor> params;  // after the steps
  std::vector<StepStats> stats;
};

// `steps` steps of `cfg` on parameters of kSizes from `seed` with rank-dependent dyadic
// gradients (layer 2 has none at odd steps), on `codec`.
inline const std::vector<int64_t> kSizes = {5000, 3, 64, 1, 777, 4096, 33};
// On `device`: the parameters, gradients and state live there; r.params come back on the CPU.
inline Run run_steps(const OptimizerConfig& cfg, std::shared_ptr<Codec> codec, std::shared_ptr<Communicator> data,
                     std::shared_ptr<HostCommunicator> control, int steps, at::Device device = at::kCPU) {
  Run r;
  r.params = make_params(kSizes, 3);
  for (auto& p : r.params) {  // dyadic start: exact arithmetic all the way
    torch::NoGradGuard g;
    p = (torch::round(p * 16) / 16).to(device).detach().requires_grad_(true);
  }
  auto opt = make_optimizer(r.params, data, control, cfg, codec);
  for (int s = 0; s < steps; ++s) {
    for (std::size_t l = 0; l < r.params.size(); ++l) {
      if (l == 2 && s % 2 == 1) {
        r.params[l].mutable_grad() = at::Tensor();  // no gradient this step
        continue;
      }
      const std::vector<float> g = dyadic(r.params[l].numel(), 100u * s + 10u * l + control->rank());
      r.params[l].mutable_grad() =
          torch::from_blob(const_cast<float*>(g.data()), {r.params[l].numel()}).clone().to(device);
    }
    opt->step();
    r.stats.push_back(opt->last_step());
  }
  for (auto& p : r.params) p = p.detach().to(at::kCPU);
  return r;
}


// Compress (every optimizer's buffers, weight decay, a skipped layer, an empty one),
// decode in every mode and error-from-state on `dev` equal the host codec's: words,
// state and momentum exactly; scales to one ulp (exactly for dyadic inputs).
inline void check_codec_operations(std::shared_ptr<Codec> dev) {
  auto host = make_host_codec(codec::Isa::kPortable);
  CHECK(dev->device_kind() == DeviceKind::kCuda);
  const std::vector<int64_t> sizes = {1, 31, 32, 33, 10007, 300000, 0, 5};
  int64_t elems = 0, words = 0;
  for (int64_t n : sizes) elems += n, words += words_for(n);
  const int64_t L = static_cast<int64_t>(sizes.size()), msg_words = words + L;
  std::mt19937 rng(11u);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> grad(elems), param(elems), state(elems), mom(elems);
  for (auto* v : {&grad, &param, &state, &mom})
    for (float& x : *v) x = nd(rng);
  for (bool exact : {false, true}) {
    if (exact) grad = dyadic(elems, 5u), param = dyadic(elems, 6u), state = dyadic(elems, 7u), mom = dyadic(elems, 8u);
    INFO((exact ? "dyadic inputs" : "normal inputs"));
    struct Side {
      std::shared_ptr<Codec> c;
      CodecBuffer grad, param, state, mom, prev, msg;
      std::unique_ptr<LayerSet> set;
    };
    Side side[2];
    for (int k = 0; k < 2; ++k) {
      Side& s = side[k];
      s.c = k == 0 ? host : dev;
      s.grad = from_host(*s.c, grad), s.param = from_host(*s.c, param), s.state = from_host(*s.c, state);
      s.mom = from_host(*s.c, mom);
      s.prev = from_host(*s.c, std::vector<float>(L, 0.125f));
      s.msg = s.c->allocate(4 * msg_words);
      std::vector<CodecLayer> layers;
      int64_t e = 0, w = 0;
      for (int64_t l = 0; l < L; ++l) {
        CodecLayer d;
        d.grad = l == 7 ? nullptr : s.grad.get<float>() + e;  // layer 7: no gradient (skipped)
        d.param = s.param.get<float>() + e;
        d.state = s.state.get<float>() + e;
        d.momentum = s.mom.get<float>() + e;
        d.n = sizes[l];
        d.word_offset = w;
        d.scale_index = words + l;
        layers.push_back(d);
        e += sizes[l], w += words_for(sizes[l]);
      }
      s.set = s.c->prepare(layers);
      codec::CompressParams cp;
      cp.lr = 0.5f, cp.weight_decay = 0.25f, cp.momentum = 0.5f;
      for (int step = 0; step < 2; ++step) s.c->compress(*s.set, cp, s.prev.get<float>(), s.msg.get<uint32_t>());
    }
    std::vector<uint32_t> m[2];
    for (int k = 0; k < 2; ++k) {
      m[k].resize(msg_words);
      side[k].c->copy(m[k].data(), side[k].msg.get(), 4 * msg_words);
      side[k].c->synchronize();
    }
    CHECK(std::equal(m[0].begin(), m[0].begin() + words, m[1].begin()));  // every word
    for (int64_t l = 0; l < L; ++l) {
      const float a = codec::bits_to_float(m[0][words + l]), b = codec::bits_to_float(m[1][words + l]);
      INFO("layer " << l << ": host scale " << a << ", emulated " << b);
      CHECK((exact ? a == b : one_ulp(a, b)));
    }
    CHECK(codec::bits_to_float(m[0][words + 7]) == 0.0f);  // the skipped layer sends scale 0
    CHECK(to_host(*host, side[0].state, elems) == to_host(*dev, side[1].state, elems));
    CHECK(to_host(*host, side[0].mom, elems) == to_host(*dev, side[1].mom, elems));
    const std::vector<float> prev0 = to_host(*host, side[0].prev, L), prev1 = to_host(*dev, side[1].prev, L);
    CHECK(prev0[7] == 0.125f);  // untouched by the skipped layer
    CHECK(prev1[7] == 0.125f);
    if (!exact) continue;
    // Decode the host's message as W = 3 blocks (the same message three times) in every mode.
    for (DecodeMode mode : {DecodeMode::kApply, DecodeMode::kAdd, DecodeMode::kVote}) {
      std::vector<uint32_t> blocks;
      for (int w = 0; w < 3; ++w) blocks.insert(blocks.end(), m[0].begin(), m[0].end());
      std::vector<float> out[2];
      for (int k = 0; k < 2; ++k) {
        Side& s = side[k];
        CodecBuffer b = s.c->allocate(4 * static_cast<int64_t>(blocks.size()));
        s.c->copy(b.get(), blocks.data(), 4 * static_cast<int64_t>(blocks.size()));
        CodecBuffer x = from_host(*s.c, param), add = from_host(*s.c, state);
        std::vector<CodecLayer> layers;
        int64_t e = 0, w = 0;
        for (int64_t l = 0; l < L; ++l) {
          CodecLayer d;
          d.grad = add.get<float>() + e;
          d.param = x.get<float>() + e;
          d.n = sizes[l];
          d.word_offset = w;
          d.scale_index = words + l;
          layers.push_back(d);
          e += sizes[l], w += words_for(sizes[l]);
        }
        auto set = s.c->prepare(layers);
        s.c->decode(*set, b.get<uint32_t>(), 3, msg_words, mode);
        out[k] = to_host(*s.c, x, elems);
        s.c->error_from_state(*set, b.get<uint32_t>());  // x = add - s sign(add), s = block 0's scales
        const std::vector<float> err = to_host(*s.c, x, elems);
        out[k].insert(out[k].end(), err.begin(), err.end());
      }
      INFO("decode mode " << static_cast<int>(mode));
      CHECK(std::memcmp(out[0].data(), out[1].data(), 4 * out[0].size()) == 0);
    }
  }
}

// sgdm's flatten (with presence) and update, the non-finite check and gathers on `dev`
// equal the host codec's.
inline void check_codec_dense_operations(std::shared_ptr<Codec> dev) {
  auto host = make_host_codec(codec::Isa::kPortable);
  const std::vector<int64_t> sizes = {10007, 1, 300};
  const int64_t N = 10308, L = 3;
  const std::vector<float> grad = dyadic(N, 1u), param = dyadic(N, 2u), mom = dyadic(N, 3u);
  std::vector<float> result[2];
  for (int k = 0; k < 2; ++k) {
    Codec& c = k == 0 ? *host : *dev;
    CodecBuffer g = from_host(c, grad), x = from_host(c, param), m = from_host(c, mom), flat = c.allocate(4 * (N + L));
    std::vector<CodecLayer> layers;
    int64_t e = 0;
    for (int64_t l = 0; l < L; ++l) {
      CodecLayer d;
      d.grad = l == 1 ? nullptr : g.get<float>() + e;
      d.param = x.get<float>() + e;
      d.momentum = m.get<float>() + e;
      d.n = sizes[l];
      d.elem_offset = e;
      d.scale_index = N + l;
      layers.push_back(d);
      e += sizes[l];
    }
    auto set = c.prepare(layers);
    c.flatten(*set, flat.get<float>());
    std::vector<float> f = to_host(c, flat, N + L);
    CHECK(f[N] == 1.0f);
    CHECK(f[N + 1] == 0.0f);  // no gradient: presence 0, and (below) no update
    c.sgdm_update(*set, flat.get<float>(), 2, SgdmParams{0.5f, 0.25f, 0.5f});
    result[k] = to_host(c, x, N);
    CHECK(result[k][10007] == param[10007]);
    CHECK(c.all_finite(flat.get<float>(), N + L));
    f[77] = std::numeric_limits<float>::infinity();
    c.copy(flat.get(), f.data(), 4 * (N + L));
    CHECK_FALSE(c.all_finite(flat.get<float>(), N + L));
    // A gather plan: two runs into a scattered destination.
    auto plan = c.prepare_gather({CopyRun{5, 100, 3}, CopyRun{0, 7, 2}});
    std::vector<float> src(N, 0.0f);
    for (int64_t i = 0; i < N; ++i) src[i] = static_cast<float>(i);
    CodecBuffer s = from_host(c, src), d = from_host(c, std::vector<float>(200, -1.0f));
    c.gather(*plan, s.get<uint32_t>(), d.get<uint32_t>());
    const std::vector<float> got = to_host(c, d, 200);
    CHECK(got[100] == 5.0f);
    CHECK(got[102] == 7.0f);
    CHECK(got[7] == 0.0f);
    CHECK(got[8] == 1.0f);
    CHECK(got[9] == -1.0f);
  }
  CHECK(std::memcmp(result[0].data(), result[1].data(), 4 * N) == 0);
}

}  // namespace efsign::test
