// kernels/sign_kernels_emu.cpp — kernels/sign_kernels.cu compiled as host C++ against
// the CUDA emulation (library efsign_kernels_emu; Note [grid emulation] in
// kernels/emu/cuda_emu_device.h). Nothing but the include: the GPU and the emulated
// builds share every line of kernel source.
#include "sign_kernels.cu"
