// Precompiled header for the LibTorch-using targets (never included by hand).
#include <torch/torch.h>
