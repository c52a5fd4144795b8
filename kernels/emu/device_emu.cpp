// kernels/emu/device_emu.cpp — the grid scheduler of Note [grid emulation]
// (cuda_emu_device.h): blocks one after another, the threads of a block as coroutines
// on the calling host thread, warp collectives and __syncthreads as rendezvous points.
//
// Threads switch with a few lines of x86-64 assembly (callee-saved registers, MXCSR
// and the x87 control word, then the stack pointer): compress makes about one switch
// per element, and on the development machine a switch (with its ballot) took ~30 ns
// this way against ~300 ns with swapcontext, which makes two sigprocmask system calls
// (test_cuda_emu and test_cuda_emu_ucontext print the figure). Elsewhere, or with
// EFSIGN_EMU_UCONTEXT defined, ucontext is used. Both tell AddressSanitizer about every
// switch, so an instrumented build checks the kernels' memory accesses.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_emu_device.h"
#include "emu_internal.h"

#if defined(__x86_64__) && !defined(EFSIGN_EMU_UCONTEXT)
#define EFSIGN_EMU_ASM_SWITCH 1
#else
#define EFSIGN_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define EFSIGN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EFSIGN_EMU_ASAN 1
#endif
#endif
#ifndef EFSIGN_EMU_ASAN
#define EFSIGN_EMU_ASAN 0
#endif
#if EFSIGN_EMU_ASAN
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if EFSIGN_EMU_ASM_SWITCH
// efsign_emu_switch(save, to): pushes the callee-saved state of the running context,
// stores its stack pointer in *save, and resumes the context whose stack pointer is
// `to`. A new context starts in efsign_emu_entry, which calls r12(r13).
extern "C" {
void efsign_emu_switch(void** save, void* to);
void efsign_emu_entry();
}
asm(R"(
  .text
  .p2align 4
  .globl efsign_emu_switch
  .hidden efsign_emu_switch
  .type efsign_emu_switch, @function
efsign_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size efsign_emu_switch, .-efsign_emu_switch

  .p2align 4
  .globl efsign_emu_entry
  .hidden efsign_emu_entry
  .type efsign_emu_entry, @function
efsign_emu_entry:
  .cfi_startproc
  .cfi_undefined rip
  movq %r13, %rdi
  callq *%r12
  ud2
  .cfi_endproc
  .size efsign_emu_entry, .-efsign_emu_entry
)");
#endif

namespace efsign::cuda_emu {

const char* context_switch_name() { return EFSIGN_EMU_ASM_SWITCH ? "x86-64 assembly" : "ucontext"; }

namespace detail {

uint3 g_thread_idx{0, 0, 0};
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim;
dim3 g_grid_dim;

namespace {

constexpr int kWarpSize = 32;

// One coroutine's saved state and (for AddressSanitizer) its stack.
struct Context {
#if EFSIGN_EMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc{};
#endif
  const void* stack_lo = nullptr;
  std::size_t stack_size = 0;
#if EFSIGN_EMU_ASAN
  void* fake_stack = nullptr;
#endif
};

void context_entry(void* arg);

#if !EFSIGN_EMU_ASM_SWITCH
void* g_ucontext_arg = nullptr;  // makecontext passes ints only
void ucontext_entry() { context_entry(g_ucontext_arg); }
#endif

void make_context(Context& c, void* stack_lo, std::size_t size, void* arg) {
  c.stack_lo = stack_lo;
  c.stack_size = size;
#if EFSIGN_EMU_ASAN
  // The stack's previous thread was abandoned mid-frame (blocks reuse the stacks):
  // its redzones are still poisoned.
  __asan_unpoison_memory_region(stack_lo, size);
#endif
#if EFSIGN_EMU_ASM_SWITCH
  // Saved-state layout, from the stack pointer up: MXCSR | x87 CW, r15, r14, r13, r12,
  // rbx, rbp, return address. After the `ret` into efsign_emu_entry the stack pointer
  // is 16-byte aligned, as the call it makes requires.
  const auto top = (reinterpret_cast<std::uintptr_t>(stack_lo) + size) & ~std::uintptr_t{15};
  void** sp = reinterpret_cast<void**>(top - 80);
  std::uint32_t mxcsr = 0;
  std::uint16_t fcw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  const std::uint64_t control = mxcsr | (std::uint64_t{fcw} << 32);
  std::memcpy(&sp[0], &control, 8);
  sp[1] = sp[2] = nullptr;                                    // r15, r14
  sp[3] = arg;                                                // r13
  sp[4] = reinterpret_cast<void*>(&context_entry);            // r12
  sp[5] = sp[6] = nullptr;                                    // rbx, rbp
  sp[7] = reinterpret_cast<void*>(&efsign_emu_entry);         // return address
  c.sp = sp;
#else
  if (getcontext(&c.uc) != 0) {
    std::perror("efsign CUDA emulation: getcontext");
    std::abort();
  }
  c.uc.uc_stack.ss_sp = stack_lo;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  g_ucontext_arg = arg;
  makecontext(&c.uc, &ucontext_entry, 0);
#endif
}

// exiting: `from` will never run again (AddressSanitizer may drop its fake stack).
void switch_context(Context& from, Context& to, bool exiting) {
#if EFSIGN_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &from.fake_stack, to.stack_lo, to.stack_size);
#else
  (void)exiting;
#endif
#if EFSIGN_EMU_ASM_SWITCH
  efsign_emu_switch(&from.sp, to.sp);
#else
  if (swapcontext(&from.uc, &to.uc) != 0) {
    std::perror("efsign CUDA emulation: swapcontext");
    std::abort();
  }
#endif
#if EFSIGN_EMU_ASAN
  __sanitizer_finish_switch_fiber(from.fake_stack, nullptr, nullptr);
#endif
}

// Stacks for the threads of a block, reused by every block and launch: one mapping,
// a PROT_NONE guard page below each stack (an overflow faults instead of corrupting
// a neighbour). Pages are committed only when touched.
class StackPool {
 public:
  static constexpr std::size_t kStackBytes = std::size_t{256} << 10;
  StackPool() : page_(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))) {}
  ~StackPool() { release(); }
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  void reserve(int count) {
    if (count <= count_) return;
    release();
    const std::size_t slot = page_ + kStackBytes;
    bytes_ = slot * static_cast<std::size_t>(count);
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("efsign CUDA emulation: mmap of thread stacks");
      std::abort();
    }
    base_ = static_cast<char*>(p);
    for (int i = 0; i < count; ++i)
      if (mprotect(base_ + slot * static_cast<std::size_t>(i), page_, PROT_NONE) != 0) {
        std::perror("efsign CUDA emulation: mprotect of a guard page");
        std::abort();
      }
    count_ = count;
  }
  void* stack(int i) const { return base_ + (page_ + kStackBytes) * static_cast<std::size_t>(i) + page_; }

 private:
  void release() {
    if (base_) munmap(base_, bytes_);
    base_ = nullptr;
    bytes_ = 0;
    count_ = 0;
  }
  std::size_t page_;
  char* base_ = nullptr;
  std::size_t bytes_ = 0;
  int count_ = 0;
};

enum class State : std::uint8_t { kReady, kWarp, kBlock, kDone };
enum class Collective : std::uint8_t { kBallot, kShuffle, kSyncWarp };

struct Thread {
  Context ctx;
  uint3 idx{0, 0, 0};
  int linear = 0, lane = 0, warp = 0;
  int turn = 0;  // position in the block's round-robin order
  State state = State::kReady;
  // The collective this thread waits in (state kWarp), or the barrier (kBlock).
  Collective op = Collective::kBallot;
  ShuffleKind kind = ShuffleKind::kIndex;
  std::uint32_t mask = 0;
  std::uint64_t value = 0;
  int arg = 0, width = kWarpSize;
  std::uint64_t result = 0;
  const char* file = "";
  int line = 0;
};

const char* collective_name(const Thread& t) {
  if (t.state == State::kBlock) return "__syncthreads";
  switch (t.op) {
    case Collective::kBallot: return "__ballot_sync/__any_sync/__all_sync";
    case Collective::kSyncWarp: return "__syncwarp";
    case Collective::kShuffle: break;
  }
  switch (t.kind) {
    case ShuffleKind::kIndex: return "__shfl_sync";
    case ShuffleKind::kDown: return "__shfl_down_sync";
    case ShuffleKind::kUp: return "__shfl_up_sync";
    case ShuffleKind::kXor: return "__shfl_xor_sync";
  }
  return "?";
}

std::string format_idx(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

uint3 unlinearize(std::uint64_t i, dim3 d) {
  const std::uint64_t xy = std::uint64_t{d.x} * d.y;
  return uint3{static_cast<unsigned>(i % d.x), static_cast<unsigned>((i / d.x) % d.y), static_cast<unsigned>(i / xy)};
}

// A permutation of [0, n) in the given order, as a function (grids may have 2^31
// blocks): shuffled is i -> (a*i + c) mod n with a coprime to n.
class Permutation {
 public:
  Permutation(std::uint64_t n, Order order, std::uint64_t seed) : n_(n), order_(order) {
    if (order_ != Order::kShuffled || n_ < 2) return;
    std::mt19937_64 rng(seed ^ (n * 0x9e3779b97f4a7c15ull));
    c_ = rng() % n_;
    do a_ = 1 + rng() % (n_ - 1);
    while (std::gcd(a_, n_) != 1);
  }
  std::uint64_t operator()(std::uint64_t i) const {
    switch (order_) {
      case Order::kForward: return i;
      case Order::kReverse: return n_ - 1 - i;
      case Order::kShuffled: break;
    }
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(a_) * i + c_) % n_);
  }

 private:
  std::uint64_t n_;
  Order order_;
  std::uint64_t a_ = 1, c_ = 0;
};

StackPool& stack_pool() {
  static StackPool pool;
  return pool;
}

class GridRun;
GridRun* g_run = nullptr;

class GridRun {
 public:
  GridRun(const GridLaunch& launch, const Schedule& schedule)
      : launch_(launch),
        schedule_(schedule),
        n_(static_cast<int>(launch.block.x * launch.block.y * launch.block.z)),
        threads_(static_cast<std::size_t>(n_)),
        order_(static_cast<std::size_t>(n_)),
        waiting_((static_cast<std::size_t>(n_) + kWarpSize - 1) / kWarpSize, 0),
        shared_(new unsigned char[launch.dynamic_shared]) {
#if EFSIGN_EMU_ASAN
    pthread_attr_t attr;
    void* lo = nullptr;
    std::size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &lo, &size);
      pthread_attr_destroy(&attr);
    }
    host_.stack_lo = lo;
    host_.stack_size = size;
#endif
  }

  std::string run() {
    stack_pool().reserve(n_);
    g_block_dim = launch_.block;
    g_grid_dim = launch_.grid;
    const dim3 g = launch_.grid;
    const std::uint64_t blocks = std::uint64_t{g.x} * g.y * g.z;
    const Permutation block_order(blocks, schedule_.blocks, schedule_.seed);
    for (std::uint64_t i = 0; i < blocks && error_.empty(); ++i) run_block(block_order(i), i);
    return error_;
  }

  void thread_main() {
    bool escaped = false;
    try {
      launch_.thunk(launch_.closure);
    } catch (const std::exception& e) {
      escaped = true;
      note_fault(std::string("an exception escaped the kernel: ") + e.what(), "", 0);
    } catch (...) {
      escaped = true;
      note_fault("an exception escaped the kernel", "", 0);
    }
    if (escaped) abandon();
    Thread& t = me();
    t.state = State::kDone;
    ++done_;
    switch_to(pick_next(t.turn), /*exiting=*/true);
    std::abort();  // an exited thread is never resumed
  }

  std::uint64_t collective(Collective op, ShuffleKind kind, std::uint32_t mask, std::uint64_t value, int arg,
                           int width, const char* file, int line) {
    Thread& t = me();
    if (((mask >> t.lane) & 1u) == 0) {
      note_fault("the calling lane " + std::to_string(t.lane) + " is not in the mask " + hex(mask) + " of " +
                     collective_name(t),
                 file, line);
      abandon();
    }
    if (op == Collective::kShuffle && (width < 1 || width > kWarpSize || (width & (width - 1)) != 0)) {
      note_fault("shuffle width " + std::to_string(width) + " is not a power of two in [1, 32]", file, line);
      abandon();
    }
    const int lanes = std::min(kWarpSize, n_ - t.warp * kWarpSize);
    if (lanes < kWarpSize && (mask >> lanes) != 0) {
      note_fault("mask " + hex(mask) + " names lanes beyond the block's last thread (this warp has " +
                     std::to_string(lanes) + " lanes)",
                 file, line);
      abandon();
    }
    t.state = State::kWarp;
    t.op = op;
    t.kind = kind;
    t.mask = mask;
    t.value = value;
    t.arg = arg;
    t.width = width;
    t.file = file;
    t.line = line;
    if (++waiting_[t.warp] >= __builtin_popcount(mask)) try_complete(t);
    if (t.state != State::kReady) wait();
    return t.result;
  }

  void barrier(const char* file, int line) {
    Thread& t = me();
    t.state = State::kBlock;
    t.file = file;
    t.line = line;
    if (++at_barrier_ == n_ - done_) {
      release_barrier();
      return;
    }
    wait();
  }

  void* dynamic_shared() { return shared_.get(); }

 private:
  Thread& me() { return threads_[static_cast<std::size_t>(current_)]; }

  static std::string hex(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08" PRIx32, v);
    return buf;
  }

  void run_block(std::uint64_t linear_block, std::uint64_t sequence) {
    g_block_idx = unlinearize(linear_block, launch_.grid);
    const Permutation thread_order(static_cast<std::uint64_t>(n_), schedule_.threads, schedule_.seed + sequence);
    for (int i = 0; i < n_; ++i) {
      const int t = static_cast<int>(thread_order(static_cast<std::uint64_t>(i)));
      order_[static_cast<std::size_t>(i)] = t;
      threads_[static_cast<std::size_t>(t)].turn = i;
    }
    for (int t = 0; t < n_; ++t) {
      Thread& th = threads_[static_cast<std::size_t>(t)];
      th.idx = unlinearize(static_cast<std::uint64_t>(t), launch_.block);
      th.linear = t;
      th.lane = t % kWarpSize;
      th.warp = t / kWarpSize;
      th.state = State::kReady;
      th.result = 0;
      make_context(th.ctx, stack_pool().stack(t), StackPool::kStackBytes, this);
    }
    std::fill(waiting_.begin(), waiting_.end(), 0);
    done_ = 0;
    at_barrier_ = 0;
    std::memset(shared_.get(), 0xff, launch_.dynamic_shared);
    current_ = -1;
    switch_to(order_[0], false);  // returns when the block is done or faulted
  }

  // Makes `next` (-1: the host) the running context.
  void switch_to(int next, bool exiting) {
    Context& from = current_ >= 0 ? me().ctx : host_;
    current_ = next;
    if (next >= 0) g_thread_idx = threads_[static_cast<std::size_t>(next)].idx;
    Context& to = next >= 0 ? threads_[static_cast<std::size_t>(next)].ctx : host_;
    switch_context(from, to, exiting);
  }

  // The running thread cannot go on: run others until it can.
  void wait() {
    const int self = current_;
    const int next = pick_next(me().turn);
    if (next != self) switch_to(next, false);
  }

  // The next ready thread after `turn` in round-robin order; when none is ready, the
  // barrier is released if every live thread waits there, the host resumes if every
  // thread has exited, and anything else is a deadlock (a fault).
  int pick_next(int turn) {
    const int next = next_ready(turn);
    if (next >= 0) return next;
    const int live = n_ - done_;
    if (live == 0) return -1;
    if (at_barrier_ == live) {
      release_barrier();
      return next_ready(turn);
    }
    note_fault("deadlock: no thread of the block can go on.\n" + describe_block(), "", 0);
    abandon();
  }

  int next_ready(int turn) const {
    for (int k = 1; k <= n_; ++k) {
      const int t = order_[static_cast<std::size_t>((turn + k) % n_)];
      if (threads_[static_cast<std::size_t>(t)].state == State::kReady) return t;
    }
    return -1;
  }

  void release_barrier() {
    for (Thread& t : threads_)
      if (t.state == State::kBlock) t.state = State::kReady;
    at_barrier_ = 0;
  }

  // Completes t's collective if every lane of its mask waits in the same one.
  void try_complete(Thread& t) {
    const int base = t.warp * kWarpSize;
    for (std::uint32_t m = t.mask; m; m &= m - 1) {
      const Thread& o = threads_[static_cast<std::size_t>(base + __builtin_ctz(m))];
      if (o.state != State::kWarp) return;  // not there yet (or never: a deadlock later)
    }
    for (std::uint32_t m = t.mask; m; m &= m - 1) {
      const Thread& o = threads_[static_cast<std::size_t>(base + __builtin_ctz(m))];
      const bool same_shuffle = t.op != Collective::kShuffle || (o.kind == t.kind && o.width == t.width);
      if (o.op != t.op || o.mask != t.mask || !same_shuffle) {
        note_fault("lane " + std::to_string(t.lane) + " is in " + collective_name(t) + " (mask " + hex(t.mask) +
                       ") while lane " + std::to_string(o.lane) + " of its mask is in " + collective_name(o) +
                       " (mask " + hex(o.mask) + ", " + o.file + ":" + std::to_string(o.line) + ")",
                   t.file, t.line);
        abandon();
      }
    }
    if (t.op == Collective::kBallot) {
      std::uint32_t bits = 0;
      for (std::uint32_t m = t.mask; m; m &= m - 1) {
        const int lane = __builtin_ctz(m);
        if (threads_[static_cast<std::size_t>(base + lane)].value) bits |= 1u << lane;
      }
      for (std::uint32_t m = t.mask; m; m &= m - 1)
        threads_[static_cast<std::size_t>(base + __builtin_ctz(m))].result = bits;
    } else if (t.op == Collective::kShuffle) {
      for (std::uint32_t m = t.mask; m; m &= m - 1) {
        Thread& o = threads_[static_cast<std::size_t>(base + __builtin_ctz(m))];
        const int src = source_lane(o);
        if (((t.mask >> src) & 1u) == 0) {
          note_fault("lane " + std::to_string(o.lane) + " reads lane " + std::to_string(src) +
                         ", which is not in the mask " + hex(t.mask),
                     t.file, t.line);
          abandon();
        }
        o.result = threads_[static_cast<std::size_t>(base + src)].value;
      }
    }
    for (std::uint32_t m = t.mask; m; m &= m - 1)
      threads_[static_cast<std::size_t>(base + __builtin_ctz(m))].state = State::kReady;
    waiting_[t.warp] -= __builtin_popcount(t.mask);
  }

  // The lane whose value thread o receives (CUDA's rules for each shuffle).
  static int source_lane(const Thread& o) {
    const int w = o.width, lane = o.lane, in_segment = lane & (w - 1), segment = lane - in_segment;
    const auto delta = static_cast<unsigned>(o.arg);
    switch (o.kind) {
      case ShuffleKind::kIndex: return segment + (o.arg & (w - 1));
      case ShuffleKind::kDown:
        return delta < static_cast<unsigned>(w - in_segment) ? lane + static_cast<int>(delta) : lane;
      case ShuffleKind::kUp: return delta <= static_cast<unsigned>(in_segment) ? lane - static_cast<int>(delta) : lane;
      case ShuffleKind::kXor: {
        const int src = lane ^ (o.arg & (kWarpSize - 1));
        return (src & ~(w - 1)) > segment ? lane : src;
      }
    }
    return lane;
  }

  // Where every thread of the block is, warp by warp, runs of lanes in one state merged.
  std::string describe_block() const {
    std::string s;
    for (int base = 0; base < n_; base += kWarpSize) {
      const int lanes = std::min(kWarpSize, n_ - base);
      s += "  warp " + std::to_string(base / kWarpSize) + ":";
      for (int a = 0; a < lanes;) {
        const Thread& t = threads_[static_cast<std::size_t>(base + a)];
        int b = a + 1;
        auto same = [&](const Thread& o) {
          const bool same_collective = o.op == t.op && o.mask == t.mask && o.kind == t.kind;
          return o.state == t.state && (t.state != State::kWarp || same_collective) && o.line == t.line &&
                 o.file == t.file;
        };
        while (b < lanes && same(threads_[static_cast<std::size_t>(base + b)])) ++b;
        s += " lanes " + std::to_string(a) + "-" + std::to_string(b - 1) + " ";
        switch (t.state) {
          case State::kReady: s += "runnable"; break;
          case State::kDone: s += "exited"; break;
          case State::kBlock: s += std::string("in __syncthreads at ") + t.file + ":" + std::to_string(t.line); break;
          case State::kWarp:
            s += std::string("in ") + collective_name(t) + " (mask " + hex(t.mask) + ") at " + t.file + ":" +
                 std::to_string(t.line);
            break;
        }
        s += ";";
        a = b;
      }
      s += "\n";
    }
    return s;
  }

  // Records the first fault, with where it happened.
  void note_fault(const std::string& what, const char* file, int line) {
    if (!error_.empty()) return;
    error_ = "kernel " + std::string(launch_.name) + ", block " + format_idx(g_block_idx);
    if (current_ >= 0) {
      const Thread& t = me();
      error_ += ", thread " + format_idx(t.idx) + " (warp " + std::to_string(t.warp) + " lane " +
                std::to_string(t.lane) + ")";
    }
    if (file && *file) error_ += " at " + std::string(file) + ":" + std::to_string(line);
    error_ += ": " + what;
  }

  // Leaves the block for good (after note_fault): its threads are never resumed. The
  // callers hold no heap objects on the thread's stack at this point.
  [[noreturn]] void abandon() {
    switch_to(-1, /*exiting=*/true);
    std::abort();
  }

  GridLaunch launch_;
  Schedule schedule_;
  int n_;
  std::vector<Thread> threads_;
  std::vector<int> order_;     // order_[turn] = thread
  std::vector<int> waiting_;   // per warp: lanes in a collective
  std::unique_ptr<unsigned char[]> shared_;
  Context host_;
  int done_ = 0, at_barrier_ = 0, current_ = -1;
  std::string error_;
};

void context_entry(void* arg) {
#if EFSIGN_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  static_cast<GridRun*>(arg)->thread_main();
}

GridRun& current_run(const char* what) {
  if (!g_run) {
    std::fprintf(stderr, "efsign CUDA emulation: %s called outside a kernel\n", what);
    std::abort();
  }
  return *g_run;
}

}  // namespace

std::string run_grid(const GridLaunch& launch, const Schedule& schedule) {
  GridRun run(launch, schedule);
  g_run = &run;
  std::string error = run.run();
  g_run = nullptr;
  return error;
}

std::uint32_t warp_ballot(std::uint32_t mask, bool predicate, const char* file, int line) {
  return static_cast<std::uint32_t>(current_run("__ballot_sync")
                                        .collective(Collective::kBallot, ShuffleKind::kIndex, mask, predicate ? 1 : 0,
                                                    0, kWarpSize, file, line));
}

std::uint64_t warp_shuffle(ShuffleKind kind, std::uint32_t mask, std::uint64_t value, int arg, int width,
                           const char* file, int line) {
  return current_run("__shfl*_sync").collective(Collective::kShuffle, kind, mask, value, arg, width, file, line);
}

void warp_sync(std::uint32_t mask, const char* file, int line) {
  current_run("__syncwarp").collective(Collective::kSyncWarp, ShuffleKind::kIndex, mask, 0, 0, kWarpSize, file, line);
}

void block_sync(const char* file, int line) { current_run("__syncthreads").barrier(file, line); }

void* dynamic_shared_memory() { return current_run("dynamic shared memory").dynamic_shared(); }

}  // namespace detail
}  // namespace efsign::cuda_emu
