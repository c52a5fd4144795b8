// kernels/model_tables.h — parameter-tensor size lists of real CIFAR models, in
// named_parameters() order, for the kernel tests and the kernel benchmark. Plain C++.
//
//   resnet18_cifar_sizes(c):  ResNet-18 for 32x32 inputs (3x3 stem, no max-pool,
//                             BasicBlocks 64-128-256-512 with 1x1 conv + BN shortcuts,
//                             bias-free convs, BN weight and bias as separate tensors,
//                             fc 512 -> c). c = 100: 62 tensors, 11,220,132 parameters.
//   vgg19_bn_cifar_sizes(c):  VGG-19 with batch norm for 32x32 inputs (16 3x3 convs with
//                             bias, each followed by BN, then fc 512 -> c).
//                             c = 10: 66 tensors, 20,040,522 parameters.
#pragma once

#include <cstdint>
#include <vector>

namespace efsign::kernels {

inline std::vector<int64_t> resnet18_cifar_sizes(int64_t num_classes) {
  std::vector<int64_t> s;
  auto conv = [&](int64_t in, int64_t out, int64_t k) { s.push_back(out * in * k * k); };
  auto bn = [&](int64_t c) {
    s.push_back(c);
    s.push_back(c);
  };
  conv(3, 64, 3);
  bn(64);
  int64_t in = 64;
  for (int64_t out : {64, 128, 256, 512}) {
    for (int block = 0; block < 2; ++block) {
      const bool shortcut = block == 0 && in != out;
      conv(in, out, 3);
      bn(out);
      conv(out, out, 3);
      bn(out);
      if (shortcut) {
        conv(in, out, 1);
        bn(out);
      }
      in = out;
    }
  }
  s.push_back(512 * num_classes);
  s.push_back(num_classes);
  return s;
}

inline std::vector<int64_t> vgg19_bn_cifar_sizes(int64_t num_classes) {
  std::vector<int64_t> s;
  int64_t in = 3;
  for (int64_t out : {64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512}) {
    s.push_back(out * in * 9);  // conv weight
    s.push_back(out);           // conv bias
    s.push_back(out);           // bn weight
    s.push_back(out);           // bn bias
    in = out;
  }
  s.push_back(512 * num_classes);
  s.push_back(num_classes);
  return s;
}

}  // namespace efsign::kernels
