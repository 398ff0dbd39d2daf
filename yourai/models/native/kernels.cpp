// Fused float32 CPU kernels for the parts of a training step MLX's CPU wheels run one scalar
// libm call per element or one single-threaded pass per op: SwiGLU, RMSNorm, a row softmax and its
// gradient, whole-head attention and its gradients, and a row cross-entropy.
//
// Why: the mlx[cpu] Linux wheels are built for baseline x86-64, so every exponential is a scalar
// polynomial whose fma and floor are library calls (~14-20 ns per float32 element here, against
// ~0.4 ns for an add), and each elementwise op is one pass on one core. These kernels compute the
// exponential as an inlined polynomial that the compiler vectorizes for the machine it is built on
// (yourai builds this file on first use, on that machine), fuse each chain into one pass over
// rows that stay in cache, and split the rows over the cores.
//
// Every op is a primitive of MLX's graph (lazy, compiled with mx.compile like any other), float32,
// row-contiguous inputs (the Python wrappers make them so), CPU only. Their gradients are written
// by the callers (yourai/models/cpu_math.py, head.py), so no vjp is defined here.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/vector.h>

#include "mlx/allocator.h"
#include "mlx/array.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace mx = mlx::core;
namespace nb = nanobind;

namespace {

// ------------------------------------------------------------------ the exponential

// e^x for float32, ~1 ulp on [-87.3, 88.7]: e^x = 2^n e^r with n = round(x / ln 2) and
// r = x - n ln 2 (ln 2 in two parts, as Cephes' expf), e^r = 1 + r + r^2 P(r) with Cephes'
// degree-5 P. Below -87.3 the result is 0 (where float32 turns subnormal), above 88.7 inf, NaN
// stays NaN. Branch-free, so loops over it vectorize.
__attribute__((always_inline)) inline float exp_f32(float x) {
  constexpr float hi = 88.72283f, lo = -87.33654f;
  float c = x < lo ? lo : x;
  c = c > hi ? hi : c;
  const float n = std::floor(c * 1.44269504088896341f + 0.5f);
  float r = std::fma(n, -0.693359375f, c);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  // 2^n from its exponent bits; n reaches 128 just below the overflow, past float32's largest power
  // of two, so that last doubling is a multiply.
  const float n_low = n > 127.0f ? 127.0f : n;
  const int32_t bits = (static_cast<int32_t>(n_low) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  float y = p * scale;
  y = n > n_low ? y * 2.0f : y;
  y = x < lo ? 0.0f : y;
  y = x > hi ? std::numeric_limits<float>::infinity() : y;
  return x != x ? x : y;
}

__attribute__((always_inline)) inline float sigmoid_f32(float x) {
  return 1.0f / (1.0f + exp_f32(-x));
}


// Row reductions in LANES independent partial results, so the compiler can keep them in vector
// registers (a single running max or sum is a serial chain, and float sums may not be reordered).
constexpr int LANES = 16;

inline float row_max(const float* s, int64_t n) {
  float part[LANES];
  std::fill(part, part + LANES, -std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES) {
    for (int l = 0; l < LANES; ++l) part[l] = s[j + l] > part[l] ? s[j + l] : part[l];
  }
  float peak = -std::numeric_limits<float>::infinity();
  for (int l = 0; l < LANES; ++l) peak = part[l] > peak ? part[l] : peak;
  for (; j < n; ++j) peak = s[j] > peak ? s[j] : peak;
  return peak;
}

// sum_j e^(s_j - shift), writing each term to out when out is not null.
inline float exp_sum(const float* s, float shift, float* out, int64_t n) {
  float part[LANES] = {};
  int64_t j = 0;
  if (out) {
    for (; j + LANES <= n; j += LANES) {
      for (int l = 0; l < LANES; ++l) {
        const float e = exp_f32(s[j + l] - shift);
        out[j + l] = e;
        part[l] += e;
      }
    }
  } else {
    for (; j + LANES <= n; j += LANES) {
      for (int l = 0; l < LANES; ++l) part[l] += exp_f32(s[j + l] - shift);
    }
  }
  float total = 0.0f;
  for (int l = 0; l < LANES; ++l) total += part[l];
  for (; j < n; ++j) {
    const float e = exp_f32(s[j] - shift);
    if (out) out[j] = e;
    total += e;
  }
  return total;
}

// ------------------------------------------------------------------ threads

int max_threads() {
  static const int threads = [] {
    if (const char* set = std::getenv("YOURAI_NATIVE_THREADS")) {
      const int n = std::atoi(set);
      if (n > 0) return n;
    }
    const unsigned n = std::thread::hardware_concurrency();
    return static_cast<int>(std::clamp(n, 1u, 16u));
  }();
  return threads;
}

// Run f(begin, end) over [0, rows) in contiguous slices, one per thread; small work stays on the
// calling thread (a thread start costs ~20 us, a 64 K-element pass ~30 us).
template <class F>
void parallel_rows(int64_t rows, int64_t row_size, F f) {
  constexpr int64_t min_elements_per_thread = 1 << 16;
  const int64_t by_size = std::max<int64_t>(1, rows * row_size / min_elements_per_thread);
  const int64_t threads = std::min<int64_t>({static_cast<int64_t>(max_threads()), by_size, rows});
  if (threads <= 1) {
    f(int64_t{0}, rows);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const int64_t slice = (rows + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t begin = t * slice, end = std::min(rows, begin + slice);
    if (begin < end) pool.emplace_back(f, begin, end);
  }
  f(int64_t{0}, std::min(rows, slice));
  for (auto& thread : pool) thread.join();
}

// ------------------------------------------------------------------ primitive plumbing

void check_inputs(const char* op, const std::vector<mx::array>& inputs) {
  for (const auto& in : inputs) {
    if (!in.flags().row_contiguous || in.data_size() != in.size()) {
      throw std::invalid_argument(std::string("[yourai native ") + op + "] inputs must be row-contiguous");
    }
  }
}

void allocate(std::vector<mx::array>& outputs) {
  for (auto& out : outputs) out.set_data(mx::allocator::malloc(out.nbytes()));
}

// A primitive whose outputs are computed by kernel(inputs, outputs) on the CPU stream.
class NativeOp : public mx::Primitive {
 public:
  using mx::Primitive::Primitive;

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    check_inputs(name(), inputs);
    allocate(outputs);
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& in : inputs) encoder.set_input_array(in);
    for (auto& out : outputs) encoder.set_output_array(out);
    // The task owns copies of the arrays (so their buffers) and of every setting it reads: MLX may
    // detach the outputs from this primitive before the task runs.
    encoder.dispatch(task(inputs, outputs));
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string("[yourai native ") + name() + "] runs on the CPU only");
  }

  using Task = std::function<void()>;
  virtual Task task(const std::vector<mx::array>& inputs, const std::vector<mx::array>& outputs) const = 0;
};

// Rows of the last axis: (rows, row length).
std::pair<int64_t, int64_t> rows_of(const mx::array& a) {
  const int64_t width = a.ndim() ? a.shape(-1) : 1;
  return {width ? static_cast<int64_t>(a.size()) / width : 0, width};
}

mx::Shape with_last(mx::Shape shape, int last) {
  shape.back() = last;
  return shape;
}

// ------------------------------------------------------------------ SwiGLU

// out = silu(gate) * x = gate * sigmoid(gate) * x.
class SwiGLU : public NativeOp {
 public:
  using NativeOp::NativeOp;
  const char* name() const override { return "SwiGLU"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out)]() mutable {
      const float* gate = in[0].data<float>();
      const float* x = in[1].data<float>();
      float* y = out[0].data<float>();
      parallel_rows(static_cast<int64_t>(in[0].size()), 1, [=](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) y[i] = gate[i] * sigmoid_f32(gate[i]) * x[i];
      });
    };
  }
};

// Gradients of silu(gate) * x for d_out, and the value itself when with_value (a backward that
// recomputes its layer's input): d_gate = d_out x (s + gate s (1 - s)), d_x = d_out gate s.
class SwiGLUGrads : public NativeOp {
 public:
  SwiGLUGrads(mx::Stream stream, bool with_value) : NativeOp(stream), with_value_(with_value) {}
  const char* name() const override { return "SwiGLUGrads"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return with_value_ == static_cast<const SwiGLUGrads&>(other).with_value_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return std::vector<mx::Shape>(with_value_ ? 3 : 2, inputs[0].shape());
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), with_value = with_value_]() mutable {
      const float* gate = in[0].data<float>();
      const float* x = in[1].data<float>();
      const float* d_out = in[2].data<float>();
      float* value = with_value ? out[0].data<float>() : nullptr;
      float* d_gate = out[with_value ? 1 : 0].data<float>();
      float* d_x = out[with_value ? 2 : 1].data<float>();
      parallel_rows(static_cast<int64_t>(in[0].size()), 1, [=](int64_t begin, int64_t end) {
        if (value) {
          for (int64_t i = begin; i < end; ++i) {
            const float s = sigmoid_f32(gate[i]), silu = gate[i] * s;
            value[i] = silu * x[i];
            d_gate[i] = d_out[i] * x[i] * (s + silu * (1.0f - s));
            d_x[i] = d_out[i] * silu;
          }
        } else {
          for (int64_t i = begin; i < end; ++i) {
            const float s = sigmoid_f32(gate[i]), silu = gate[i] * s;
            d_gate[i] = d_out[i] * x[i] * (s + silu * (1.0f - s));
            d_x[i] = d_out[i] * silu;
          }
        }
      });
    };
  }

 private:
  bool with_value_;
};

// ------------------------------------------------------------------ RMSNorm

// sum_j a[j] * b[j], in LANES partial sums.
inline float row_dot(const float* a, const float* b, int64_t n) {
  float part[LANES] = {};
  int64_t j = 0;
  for (; j + LANES <= n; j += LANES) {
    for (int l = 0; l < LANES; ++l) part[l] += a[j + l] * b[j + l];
  }
  float total = 0.0f;
  for (int l = 0; l < LANES; ++l) total += part[l];
  for (; j < n; ++j) total += a[j] * b[j];
  return total;
}

// 1 / sqrt(mean(x^2) + eps) of a row.
inline float inverse_rms(const float* x, int64_t width, float eps) {
  return 1.0f / std::sqrt(row_dot(x, x, width) / static_cast<float>(width) + eps);
}

// A row-norm primitive and its epsilon (equivalent when the epsilons are).
class NormOp : public NativeOp {
 public:
  NormOp(mx::Stream stream, float eps, bool with_value = false) : NativeOp(stream), eps_(eps), with_value_(with_value) {}
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const NormOp&>(other);
    return eps_ == o.eps_ && with_value_ == o.with_value_;
  }

 protected:
  float eps_;
  bool with_value_;
};

// y = x * w / sqrt(mean(x^2) + eps) over the last axis (mx.fast.rms_norm; MLX's CPU runs it as
// single-threaded passes: square, mean, rsqrt and two products).
class RMSNorm : public NormOp {
 public:
  using NormOp::NormOp;
  const char* name() const override { return "RMSNorm"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override { return {inputs[0].shape()}; }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), eps = eps_]() mutable {
      const auto [rows, width] = rows_of(in[0]);
      const float *x = in[0].data<float>(), *w = in[1].data<float>();
      float* y = out[0].data<float>();
      parallel_rows(rows, width, [=](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const float* xr = x + row * width;
          float* yr = y + row * width;
          const float r = inverse_rms(xr, width, eps);
          for (int64_t j = 0; j < width; ++j) yr[j] = w[j] * (xr[j] * r);
        }
      });
    };
  }
};

// RMSNorm's input gradient for d_y, d_x = r w d_y - x r^3 mean(x w d_y) with r = 1 / sqrt(mean(x^2) + eps),
// and the value itself when with_value (a backward that recomputes its layer's input).
class RMSNormGrads : public NormOp {
 public:
  using NormOp::NormOp;
  const char* name() const override { return "RMSNormGrads"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return std::vector<mx::Shape>(with_value_ ? 2 : 1, inputs[0].shape());
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), eps = eps_, with_value = with_value_]() mutable {
      const auto [rows, width] = rows_of(in[0]);
      const float *x = in[0].data<float>(), *w = in[1].data<float>(), *d_y = in[2].data<float>();
      float* y = with_value ? out[0].data<float>() : nullptr;
      float* d_x = out[with_value ? 1 : 0].data<float>();
      parallel_rows(rows, width, [=](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t at = row * width;
          const float r = inverse_rms(x + at, width, eps);
          float part[LANES] = {};
          int64_t j = 0;
          for (; j + LANES <= width; j += LANES) {
            for (int l = 0; l < LANES; ++l) part[l] += x[at + j + l] * w[j + l] * d_y[at + j + l];
          }
          float dot = 0.0f;
          for (int l = 0; l < LANES; ++l) dot += part[l];
          for (; j < width; ++j) dot += x[at + j] * w[j] * d_y[at + j];
          const float correction = r * r * r * dot / static_cast<float>(width);
          for (j = 0; j < width; ++j) d_x[at + j] = r * w[j] * d_y[at + j] - x[at + j] * correction;
          if (y) {
            for (j = 0; j < width; ++j) y[at + j] = w[j] * (x[at + j] * r);
          }
        }
      });
    };
  }
};

// ------------------------------------------------------------------ RoPE

// Rotary position embedding (mx.fast.rope) with the layout change around it: forward takes the
// projection's [B, L, H, D] and gives the attention's [B, H, L, D], rotating the first `dims` features
// of position offset + l by theta_i = (offset + l) * scale * base^(-2i / dims) (pairs (i, i + dims/2),
// or (2i, 2i + 1) when traditional); backward rotates by -theta, the transpose, from [B, H, L, D]
// back to [B, L, H, D]. Why: MLX's CPU RoPE is a chain of single-threaded passes (and a copy to lay
// the heads out), each way.
struct RopeSetting {
  int dims;
  bool traditional;
  float base, scale;
  int offset;
  bool backward;
  bool operator==(const RopeSetting& o) const {
    return dims == o.dims && traditional == o.traditional && base == o.base && scale == o.scale && offset == o.offset
           && backward == o.backward;
  }
};

class Rope : public NativeOp {
 public:
  Rope(mx::Stream stream, RopeSetting setting) : NativeOp(stream), setting_(setting) {}
  const char* name() const override { return "Rope"; }
  bool is_equivalent(const mx::Primitive& other) const override { return setting_ == static_cast<const Rope&>(other).setting_; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& in) override {
    const auto& x = in[0].shape();
    return {{x[0], x[2], x[1], x[3]}};
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), r = setting_]() mutable {
      const auto& shape = in[0].shape();
      const int64_t batch = shape[0], heads = r.backward ? shape[1] : shape[2];
      const int64_t length = r.backward ? shape[2] : shape[1], dim = shape[3], half = r.dims / 2;
      std::vector<float> cosines(length * half), sines(length * half);
      for (int64_t i = 0; i < half; ++i) {
        const float frequency = static_cast<float>(std::pow(static_cast<double>(r.base), -2.0 * i / r.dims));
        for (int64_t l = 0; l < length; ++l) {
          const float theta = r.scale * static_cast<float>(r.offset + l) * frequency;
          cosines[l * half + i] = std::cos(theta);
          sines[l * half + i] = r.backward ? -std::sin(theta) : std::sin(theta);
        }
      }
      const float* x = in[0].data<float>();
      float* y = out[0].data<float>();
      const float *cs = cosines.data(), *sn = sines.data();
      parallel_rows(batch * length, heads * dim, [=](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {  // one position of one sequence, every head
          const int64_t b = row / length, l = row % length;
          const float *c = cs + l * half, *s = sn + l * half;
          for (int64_t h = 0; h < heads; ++h) {
            const int64_t token_at = (row * heads + h) * dim, head_at = ((b * heads + h) * length + l) * dim;
            const float* src = x + (r.backward ? head_at : token_at);
            float* dst = y + (r.backward ? token_at : head_at);
            const int64_t step = r.traditional ? 1 : half, stride = r.traditional ? 2 : 1;
            for (int64_t i = 0; i < half; ++i) {
              const float x1 = src[i * stride], x2 = src[i * stride + step];
              dst[i * stride] = x1 * c[i] - x2 * s[i];
              dst[i * stride + step] = x2 * c[i] + x1 * s[i];
            }
            for (int64_t d = 2 * half; d < dim; ++d) dst[d] = src[d];
          }
        }
      });
    };
  }

 private:
  RopeSetting setting_;
};

// ------------------------------------------------------------------ row softmax

// p = softmax(s) over a row's first `seen` entries and 0 up to `width` (p may be s); returns the
// row's log-sum-exp.
inline float softmax_row(const float* s, float* p, int64_t seen, int64_t width) {
  const float peak = row_max(s, seen);
  const float total = exp_sum(s, peak, p, seen);
  const float inverse = 1.0f / total;
  for (int64_t j = 0; j < seen; ++j) p[j] *= inverse;
  std::fill(p + seen, p + width, 0.0f);
  return peak + std::log(total);
}

// The softmax backward of one row from its scores: w = e^(s - lse), ds = w * (dw - delta) over the
// first `seen` entries, 0 up to `width` (w may be s, ds may be dw).
inline void softmax_grad_row(const float* s, float lse, const float* dw, float delta, float* w, float* ds, int64_t seen,
                             int64_t width) {
  for (int64_t j = 0; j < seen; ++j) {
    const float e = exp_f32(s[j] - lse);
    w[j] = e;
    ds[j] = e * (dw[j] - delta);
  }
  std::fill(w + seen, w + width, 0.0f);
  std::fill(ds + seen, ds + width, 0.0f);
}

// A causal mask read from the row index, as an attention's [..., queries, keys] scores lie: the
// row's query is at row % queries among the last `queries` of the keys, and sees the keys up to
// it. queries == 0: no mask. Masked keys get weight exactly 0 and no exponential is taken for them.
struct Causal {
  int64_t queries = 0;

  int64_t visible(int64_t row, int64_t width) const {
    return queries > 0 ? std::min(width, row % queries + (width - queries) + 1) : width;
  }
  bool operator==(const Causal& other) const { return queries == other.queries; }
};

// A row-softmax primitive and its mask (two are equivalent when their masks are).
class CausalRowsOp : public NativeOp {
 public:
  CausalRowsOp(mx::Stream stream, Causal causal) : NativeOp(stream), causal_(causal) {}
  bool is_equivalent(const mx::Primitive& other) const override {
    return causal_ == static_cast<const CausalRowsOp&>(other).causal_;
  }

 protected:
  Causal causal_;
};

// probabilities = softmax(scores) over the last axis, and each row's log-sum-exp [..., 1].
class SoftmaxRows : public CausalRowsOp {
 public:
  using CausalRowsOp::CausalRowsOp;
  const char* name() const override { return "SoftmaxRows"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape(), with_last(inputs[0].shape(), 1)};
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), causal = causal_]() mutable {
      const auto [rows, width] = rows_of(in[0]);
      const float* scores = in[0].data<float>();
      float* probs = out[0].data<float>();
      float* lse = out[1].data<float>();
      parallel_rows(rows, width, [=](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          lse[row] = softmax_row(scores + row * width, probs + row * width, causal.visible(row, width), width);
        }
      });
    };
  }
};

// The softmax backward from recomputed scores: weights = e^(scores - lse) and
// d_scores = weights * (d_weights - delta), delta [..., 1] being each row's sum(d_out * out).
class SoftmaxGradRows : public CausalRowsOp {
 public:
  using CausalRowsOp::CausalRowsOp;
  const char* name() const override { return "SoftmaxGradRows"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    return {inputs[0].shape(), inputs[0].shape()};
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), causal = causal_]() mutable {
      const auto [rows, width] = rows_of(in[0]);
      const float* scores = in[0].data<float>();
      const float* lse = in[1].data<float>();
      const float* d_weights = in[2].data<float>();
      const float* delta = in[3].data<float>();
      float* weights = out[0].data<float>();
      float* d_scores = out[1].data<float>();
      parallel_rows(rows, width, [=](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t at = row * width;
          softmax_grad_row(scores + at, lse[row], d_weights + at, delta[row], weights + at, d_scores + at,
                           causal.visible(row, width), width);
        }
      });
    };
  }
};

// ------------------------------------------------------------------ row cross-entropy

// Token cross-entropy of logits [N, V] against targets [N] (int32): ce = log sum e^z - z_target,
// and with with_grad its gradient for a cotangent of one per token, softmax(z) - onehot(target).
class CrossEntropyRows : public NativeOp {
 public:
  CrossEntropyRows(mx::Stream stream, bool with_grad) : NativeOp(stream), with_grad_(with_grad) {}
  const char* name() const override { return "CrossEntropyRows"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    return with_grad_ == static_cast<const CrossEntropyRows&>(other).with_grad_;
  }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& inputs) override {
    mx::Shape tokens(inputs[0].shape().begin(), inputs[0].shape().end() - 1);
    if (with_grad_) return {tokens, inputs[0].shape()};
    return {tokens};
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), with_grad = with_grad_]() mutable {
      const auto [rows, width] = rows_of(in[0]);
      const float* logits = in[0].data<float>();
      const int32_t* targets = in[1].data<int32_t>();
      float* ce = out[0].data<float>();
      float* grad = with_grad ? out[1].data<float>() : nullptr;
      parallel_rows(rows, width, [=](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const float* z = logits + row * width;
          const int32_t target = targets[row];
          if (target < 0 || target >= width) {
            ce[row] = std::numeric_limits<float>::quiet_NaN();  // like take_along_axis out of range: no value
            if (grad) std::fill(grad + row * width, grad + (row + 1) * width, std::numeric_limits<float>::quiet_NaN());
            continue;
          }
          const float peak = row_max(z, width);
          float* g = grad ? grad + row * width : nullptr;
          const float total = exp_sum(z, peak, g, width);
          if (g) {
            const float inverse = 1.0f / total;
            for (int64_t j = 0; j < width; ++j) g[j] *= inverse;
            g[target] -= 1.0f;
          }
          ce[row] = std::log(total) - (z[target] - peak);
        }
      });
    };
  }

 private:
  bool with_grad_;
};

// ------------------------------------------------------------------ attention

// Whole-head causal attention, forward and backward, for the CPU: the scores of a tile of query
// rows are computed, softmaxed and multiplied by the values while they are in cache, as
// FlashAttention does on a GPU. Why: through MLX each head's Q K^T, P V and their gradients are
// separate BLAS calls on [64-256, 64] blocks, each with its own thread handoff, a pass that clears
// the output and fresh pages; at SmolLM2's shapes they ran at ~40 GFLOP/s where a large product runs
// at ~300, and took a quarter of a training step.
//
// The products are written with the compiler's vector extensions: register tiles of TILE_ROWS rows
// by up to 4 vectors of the machine's vector width (16 floats with AVX-512, else 8).

#if defined(__AVX512F__)
constexpr int W = 16;
constexpr int TILE_ROWS = 4;
#else
constexpr int W = 8;
constexpr int TILE_ROWS = 2;
#endif
constexpr int TILE_VECTORS = 4;     // vectors per row tile (AVX2: 2 x 4 accumulators of its 16 registers)
constexpr int KEY_BLOCK = TILE_VECTORS * W;  // keys per column tile of Q K^T; rows of scores are padded to it
constexpr int64_t QUERY_TILE = 64;  // query rows whose scores are held at once

typedef float vec __attribute__((vector_size(W * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(vec));
  return v;
}

inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof(vec)); }

inline int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// out[r, j] = scale * sum_d a[r * a_stride + d] * bt[d * bt_stride + j] for r < NR, j < cols (a
// multiple of KEY_BLOCK): a tile of rows against keys laid out as columns.
template <int NR>
void a_bt_tile(const float* a, int64_t a_stride, const float* bt, int64_t bt_stride, int64_t cols, int64_t depth,
               float scale, float* out, int64_t out_stride) {
  for (int64_t j = 0; j < cols; j += KEY_BLOCK) {
    vec acc[NR][TILE_VECTORS] = {};
    for (int64_t d = 0; d < depth; ++d) {
      vec b[TILE_VECTORS];
      for (int c = 0; c < TILE_VECTORS; ++c) b[c] = load(bt + d * bt_stride + j + c * W);
      for (int r = 0; r < NR; ++r) {
        const vec x = vec{} + a[r * a_stride + d];
        for (int c = 0; c < TILE_VECTORS; ++c) acc[r][c] += x * b[c];
      }
    }
    for (int r = 0; r < NR; ++r) {
      for (int c = 0; c < TILE_VECTORS; ++c) store(out + r * out_stride + j + c * W, acc[r][c] * scale);
    }
  }
}

void a_bt(const float* a, int64_t a_stride, int64_t rows, const float* bt, int64_t bt_stride, int64_t cols,
          int64_t depth, float scale, float* out, int64_t out_stride) {
  int64_t r = 0;
  for (; r + TILE_ROWS <= rows; r += TILE_ROWS) {
    a_bt_tile<TILE_ROWS>(a + r * a_stride, a_stride, bt, bt_stride, cols, depth, scale, out + r * out_stride, out_stride);
  }
  for (; r < rows; ++r) a_bt_tile<1>(a + r * a_stride, a_stride, bt, bt_stride, cols, depth, scale, out + r * out_stride, out_stride);
}

// out[r, c] (+)= scale * sum_t p[r * p_row + t * p_step] * x[t * x_step + c] for r < NR and NV vectors of c:
// P V when p's rows are queries (p_row = its stride, p_step = 1), dS^T Q when they are keys (p_row = 1).
template <int NR, int NV, bool ADD>
void p_x_tile(const float* p, int64_t p_row, int64_t p_step, const float* x, int64_t x_step, int64_t n, float scale,
              float* out, int64_t out_stride) {
  vec acc[NR][NV] = {};
  for (int64_t t = 0; t < n; ++t) {
    vec xs[NV];
    for (int c = 0; c < NV; ++c) xs[c] = load(x + t * x_step + c * W);
    for (int r = 0; r < NR; ++r) {
      const vec w = vec{} + p[r * p_row + t * p_step];
      for (int c = 0; c < NV; ++c) acc[r][c] += w * xs[c];
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int c = 0; c < NV; ++c) {
      float* o = out + r * out_stride + c * W;
      store(o, ADD ? load(o) + acc[r][c] * scale : acc[r][c] * scale);
    }
  }
}

template <int NR, bool ADD>
void p_x_rows(const float* p, int64_t p_row, int64_t p_step, const float* x, int64_t x_step, int64_t n, int64_t width,
              float scale, float* out, int64_t out_stride) {
  int64_t c = 0;
  for (; c + TILE_VECTORS * W <= width; c += TILE_VECTORS * W) {
    p_x_tile<NR, TILE_VECTORS, ADD>(p, p_row, p_step, x + c, x_step, n, scale, out + c, out_stride);
  }
  for (; c + W <= width; c += W) p_x_tile<NR, 1, ADD>(p, p_row, p_step, x + c, x_step, n, scale, out + c, out_stride);
  for (; c < width; ++c) {  // a head width that is not a multiple of the vector width
    for (int r = 0; r < NR; ++r) {
      float sum = 0.0f;
      for (int64_t t = 0; t < n; ++t) sum += p[r * p_row + t * p_step] * x[t * x_step + c];
      out[r * out_stride + c] = ADD ? out[r * out_stride + c] + sum * scale : sum * scale;
    }
  }
}

template <bool ADD>
void p_x(const float* p, int64_t p_row, int64_t p_step, int64_t rows, const float* x, int64_t x_step, int64_t n,
         int64_t width, float scale, float* out, int64_t out_stride) {
  int64_t r = 0;
  for (; r + TILE_ROWS <= rows; r += TILE_ROWS) {
    p_x_rows<TILE_ROWS, ADD>(p + r * p_row, p_row, p_step, x, x_step, n, width, scale, out + r * out_stride, out_stride);
  }
  for (; r < rows; ++r) p_x_rows<1, ADD>(p + r * p_row, p_row, p_step, x, x_step, n, width, scale, out + r * out_stride, out_stride);
}

// rows [keys, width] (row stride `stride`) into columns [width, padded] with zeros past `keys`.
void transpose_into(const float* rows, int64_t stride, int64_t keys, int64_t width, float* columns, int64_t padded) {
  for (int64_t d = 0; d < width; ++d) {
    float* column = columns + d * padded;
    for (int64_t j = 0; j < keys; ++j) column[j] = rows[j * stride + d];
    std::fill(column + keys, column + padded, 0.0f);
  }
}

// q [B, Hq, L, D], k and v [B, Hkv, S, D] (Hq a multiple of Hkv: grouped heads share a key/value head),
// the queries the last L of the S positions; causal: query i sees keys up to i + S - L.
struct AttentionShape {
  int64_t batch, heads, kv_heads, length, span, dim;
  float scale;
  bool causal;

  int64_t group() const { return heads / kv_heads; }
  int64_t padded() const { return round_up(span, KEY_BLOCK); }
  int64_t visible(int64_t query) const { return causal ? std::min(span, query + span - length + 1) : span; }
};

// A primitive holding the attention's scale and mask (equivalent when both are).
class AttentionOp : public NativeOp {
 public:
  AttentionOp(mx::Stream stream, float scale, bool causal) : NativeOp(stream), scale_(scale), causal_(causal) {}
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const AttentionOp&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_;
  }

 protected:
  AttentionShape shape_of(const std::vector<mx::array>& in) const {
    return {in[0].shape(0), in[0].shape(1), in[1].shape(1), in[0].shape(2), in[1].shape(2), in[0].shape(3), scale_, causal_};
  }

  float scale_;
  bool causal_;
};

// out [B, L, Hq * D] (token order, as the output projection reads it) and each row's log-sum-exp [B, Hq, L].
class Attention : public AttentionOp {
 public:
  using AttentionOp::AttentionOp;
  const char* name() const override { return "Attention"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& in) override {
    return {{in[0].shape(0), in[0].shape(2), in[0].shape(1) * in[0].shape(3)}, {in[0].shape(0), in[0].shape(1), in[0].shape(2)}};
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), shape = shape_of(in)]() mutable {
      const float *q = in[0].data<float>(), *k = in[1].data<float>(), *v = in[2].data<float>();
      float *o = out[0].data<float>(), *lse = out[1].data<float>();
      const AttentionShape a = shape;
      // a head's work, in parallel_rows' unit (an element of a one-pass kernel): its L x S scores, each
      // costing ~D / W vector multiply-adds twice (Q K^T and P V)
      parallel_rows(a.batch * a.heads, a.length * a.span * 2 * a.dim / W, [=](int64_t begin, int64_t end) {
        const int64_t padded = a.padded(), token = a.heads * a.dim;
        std::vector<float> keys(a.dim * padded), scores(QUERY_TILE * padded);
        int64_t loaded = -1;  // the key/value head whose keys are in `keys`
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / a.heads, h = task % a.heads, kv = b * a.kv_heads + h / a.group();
          const float* values = v + kv * a.span * a.dim;
          if (kv != loaded) transpose_into(k + kv * a.span * a.dim, a.dim, a.span, a.dim, keys.data(), padded);
          loaded = kv;
          for (int64_t i0 = 0; i0 < a.length; i0 += QUERY_TILE) {
            const int64_t rows = std::min(QUERY_TILE, a.length - i0), reach = a.visible(i0 + rows - 1);
            a_bt(q + (task * a.length + i0) * a.dim, a.dim, rows, keys.data(), padded, round_up(reach, KEY_BLOCK), a.dim,
                 a.scale, scores.data(), padded);
            for (int64_t r = 0; r < rows; ++r) {
              float* s = scores.data() + r * padded;
              lse[task * a.length + i0 + r] = softmax_row(s, s, a.visible(i0 + r), reach);
            }
            p_x<false>(scores.data(), padded, 1, rows, values, a.dim, reach, a.dim, 1.0f,
                       o + (b * a.length + i0) * token + h * a.dim, token);
          }
        }
      });
    };
  }
};

// The attention's gradients dq [B, Hq, L, D], dk and dv [B, Hkv, S, D] for d_out [B, L, Hq * D], from
// q, k, v, the forward's out and log-sum-exp: the weights are recomputed tile by tile (FlashAttention's
// backward), d_scores = weights * (d_out v^T - rowsum(d_out * out)). One task per key/value head, so
// the heads sharing it add into its dk and dv in turn.
class AttentionGrads : public AttentionOp {
 public:
  using AttentionOp::AttentionOp;
  const char* name() const override { return "AttentionGrads"; }
  std::vector<mx::Shape> output_shapes(const std::vector<mx::array>& in) override {
    return {in[0].shape(), in[1].shape(), in[2].shape()};
  }

  Task task(const std::vector<mx::array>& in, const std::vector<mx::array>& out) const override {
    return [in, out = std::vector<mx::array>(out), shape = shape_of(in)]() mutable {
      const float *q = in[0].data<float>(), *k = in[1].data<float>(), *v = in[2].data<float>();
      const float *o = in[3].data<float>(), *lse = in[4].data<float>(), *d_o = in[5].data<float>();
      float *dq = out[0].data<float>(), *dk = out[1].data<float>(), *dv = out[2].data<float>();
      const AttentionShape a = shape;
      // a key/value head's work (as in Attention): its heads' scores, five products each
      parallel_rows(a.batch * a.kv_heads, a.group() * a.length * a.span * 5 * a.dim / W, [=](int64_t begin, int64_t end) {
        const int64_t padded = a.padded(), token = a.heads * a.dim;
        std::vector<float> keys(a.dim * padded), values(a.dim * padded), weights(QUERY_TILE * padded),
            d_scores(QUERY_TILE * padded);
        for (int64_t kv = begin; kv < end; ++kv) {
          const int64_t b = kv / a.kv_heads, at = kv * a.span * a.dim;
          transpose_into(k + at, a.dim, a.span, a.dim, keys.data(), padded);
          transpose_into(v + at, a.dim, a.span, a.dim, values.data(), padded);
          std::fill(dk + at, dk + at + a.span * a.dim, 0.0f);
          std::fill(dv + at, dv + at + a.span * a.dim, 0.0f);
          for (int64_t h = (kv % a.kv_heads) * a.group(); h < (kv % a.kv_heads + 1) * a.group(); ++h) {
            const int64_t head = b * a.heads + h;
            for (int64_t i0 = 0; i0 < a.length; i0 += QUERY_TILE) {
              const int64_t rows = std::min(QUERY_TILE, a.length - i0), reach = a.visible(i0 + rows - 1);
              const int64_t cols = round_up(reach, KEY_BLOCK);
              const float* q_rows = q + (head * a.length + i0) * a.dim;
              const int64_t token_at = (b * a.length + i0) * token + h * a.dim;
              a_bt(q_rows, a.dim, rows, keys.data(), padded, cols, a.dim, a.scale, weights.data(), padded);
              a_bt(d_o + token_at, token, rows, values.data(), padded, cols, a.dim, 1.0f, d_scores.data(), padded);
              for (int64_t r = 0; r < rows; ++r) {
                float *w = weights.data() + r * padded, *ds = d_scores.data() + r * padded;
                const float delta = row_dot(o + token_at + r * token, d_o + token_at + r * token, a.dim);
                softmax_grad_row(w, lse[head * a.length + i0 + r], ds, delta, w, ds, a.visible(i0 + r), reach);
              }
              p_x<false>(d_scores.data(), padded, 1, rows, k + at, a.dim, reach, a.dim, a.scale,
                         dq + (head * a.length + i0) * a.dim, a.dim);
              p_x<true>(d_scores.data(), 1, padded, reach, q_rows, a.dim, rows, a.dim, a.scale, dk + at, a.dim);
              p_x<true>(weights.data(), 1, padded, reach, d_o + token_at, token, rows, a.dim, 1.0f, dv + at, a.dim);
            }
          }
        }
      });
    };
  }
};

// ------------------------------------------------------------------ ops

mx::Stream cpu_stream() {
  return mx::to_stream(mx::StreamOrDevice{}, mx::Device::cpu);
}

void require_float32(const char* op, const std::vector<mx::array>& arrays) {
  for (const auto& a : arrays) {
    if (a.dtype() != mx::float32) throw std::invalid_argument(std::string("[yourai native ") + op + "] needs float32 inputs");
  }
}

void require_same_shape(const char* op, const std::vector<mx::array>& arrays) {
  for (const auto& a : arrays) {
    if (a.shape() != arrays[0].shape()) throw std::invalid_argument(std::string("[yourai native ") + op + "] inputs differ in shape");
  }
}

mx::array swiglu(const mx::array& gate, const mx::array& x) {
  require_float32("swiglu", {gate, x});
  require_same_shape("swiglu", {gate, x});
  auto s = cpu_stream();
  return mx::array(gate.shape(), mx::float32, std::make_shared<SwiGLU>(s), {mx::contiguous(gate, false, s), mx::contiguous(x, false, s)});
}

std::vector<mx::array> swiglu_grads(const mx::array& gate, const mx::array& x, const mx::array& d_out, bool with_value) {
  require_float32("swiglu_grads", {gate, x, d_out});
  require_same_shape("swiglu_grads", {gate, x, d_out});
  auto s = cpu_stream();
  std::vector<mx::Shape> shapes(with_value ? 3 : 2, gate.shape());
  return mx::array::make_arrays(shapes, std::vector<mx::Dtype>(shapes.size(), mx::float32),
                                std::make_shared<SwiGLUGrads>(s, with_value),
                                {mx::contiguous(gate, false, s), mx::contiguous(x, false, s), mx::contiguous(d_out, false, s)});
}

void check_norm(const char* op, const mx::array& x, const mx::array& weight) {
  require_float32(op, {x, weight});
  if (x.ndim() == 0 || weight.ndim() != 1 || weight.shape(0) != x.shape(-1)) {
    throw std::invalid_argument(std::string("[yourai native ") + op + "] needs x [..., D] and weight [D]");
  }
}

mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps) {
  check_norm("rms_norm", x, weight);
  auto s = cpu_stream();
  return mx::array(x.shape(), mx::float32, std::make_shared<RMSNorm>(s, eps),
                   {mx::contiguous(x, false, s), mx::contiguous(weight, false, s)});
}

std::vector<mx::array> rms_norm_grads(const mx::array& x, const mx::array& weight, const mx::array& d_out, float eps,
                                      bool with_value) {
  check_norm("rms_norm_grads", x, weight);
  require_float32("rms_norm_grads", {d_out});
  require_same_shape("rms_norm_grads", {x, d_out});
  auto s = cpu_stream();
  std::vector<mx::Shape> shapes(with_value ? 2 : 1, x.shape());
  return mx::array::make_arrays(shapes, std::vector<mx::Dtype>(shapes.size(), mx::float32),
                                std::make_shared<RMSNormGrads>(s, eps, with_value),
                                {mx::contiguous(x, false, s), mx::contiguous(weight, false, s), mx::contiguous(d_out, false, s)});
}

mx::array rope(const mx::array& x, int dims, bool traditional, float base, float scale, int offset, bool backward) {
  require_float32("rope", {x});
  if (x.ndim() != 4 || dims <= 0 || dims % 2 != 0 || dims > x.shape(3) || offset < 0) {
    throw std::invalid_argument("[yourai native rope] needs x [B, L, H, D] ([B, H, L, D] backward) and an even "
                                "dims of at most D, offset >= 0");
  }
  auto s = cpu_stream();
  const auto& d = x.shape();
  return mx::array({d[0], d[2], d[1], d[3]}, mx::float32,
                   std::make_shared<Rope>(s, RopeSetting{dims, traditional, base, scale, offset, backward}),
                   {mx::contiguous(x, false, s)});
}

Causal causal_of(const char* op, const mx::array& scores, int causal_queries) {
  if (causal_queries < 0 || (causal_queries > 0 && (scores.ndim() < 2 || scores.shape(-1) < causal_queries))) {
    throw std::invalid_argument(std::string("[yourai native ") + op + "] causal_queries must be 0 or at most the keys");
  }
  return Causal{causal_queries};
}

std::vector<mx::array> softmax_rows(const mx::array& scores, int causal_queries) {
  require_float32("softmax_rows", {scores});
  if (scores.ndim() == 0) throw std::invalid_argument("[yourai native softmax_rows] needs at least one axis");
  const Causal causal = causal_of("softmax_rows", scores, causal_queries);
  auto s = cpu_stream();
  return mx::array::make_arrays({scores.shape(), with_last(scores.shape(), 1)}, {mx::float32, mx::float32},
                                std::make_shared<SoftmaxRows>(s, causal), {mx::contiguous(scores, false, s)});
}

std::vector<mx::array> softmax_grad_rows(const mx::array& scores, const mx::array& lse, const mx::array& d_weights,
                                         const mx::array& delta, int causal_queries) {
  require_float32("softmax_grad_rows", {scores, lse, d_weights, delta});
  const Causal causal = causal_of("softmax_grad_rows", scores, causal_queries);
  require_same_shape("softmax_grad_rows", {scores, d_weights});
  const auto row_shape = with_last(scores.shape(), 1);
  if (lse.shape() != row_shape || delta.shape() != row_shape) {
    throw std::invalid_argument("[yourai native softmax_grad_rows] lse and delta must be the scores' shape with a last axis of 1");
  }
  auto s = cpu_stream();
  return mx::array::make_arrays({scores.shape(), scores.shape()}, {mx::float32, mx::float32},
                                std::make_shared<SoftmaxGradRows>(s, causal),
                                {mx::contiguous(scores, false, s), mx::contiguous(lse, false, s),
                                 mx::contiguous(d_weights, false, s), mx::contiguous(delta, false, s)});
}

std::vector<mx::array> cross_entropy_rows(const mx::array& logits, const mx::array& targets, bool with_grad) {
  require_float32("cross_entropy_rows", {logits});
  if (logits.ndim() != 2 || targets.ndim() != 1 || targets.shape(0) != logits.shape(0)) {
    throw std::invalid_argument("[yourai native cross_entropy_rows] needs logits [N, V] and targets [N]");
  }
  auto s = cpu_stream();
  std::vector<mx::Shape> shapes{{logits.shape(0)}};
  if (with_grad) shapes.push_back(logits.shape());
  return mx::array::make_arrays(shapes, std::vector<mx::Dtype>(shapes.size(), mx::float32),
                                std::make_shared<CrossEntropyRows>(s, with_grad),
                                {mx::contiguous(logits, false, s), mx::contiguous(mx::astype(targets, mx::int32, s), false, s)});
}

void check_attention(const char* op, const mx::array& q, const mx::array& k, const mx::array& v, bool causal) {
  require_float32(op, {q, k, v});
  if (q.ndim() != 4 || k.ndim() != 4 || k.shape() != v.shape() || q.shape(0) != k.shape(0) || q.shape(3) != k.shape(3)
      || k.shape(1) == 0 || q.shape(1) % k.shape(1) != 0 || (causal && k.shape(2) < q.shape(2))) {
    throw std::invalid_argument(std::string("[yourai native ") + op + "] needs q [B, Hq, L, D], k and v [B, Hkv, S, D] "
                                "with Hq a multiple of Hkv (and S >= L when causal)");
  }
}

std::vector<mx::array> attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, bool causal) {
  check_attention("attention", q, k, v, causal);
  auto s = cpu_stream();
  const auto b = q.shape(0), h = q.shape(1), l = q.shape(2);
  return mx::array::make_arrays({{b, l, h * q.shape(3)}, {b, h, l}}, {mx::float32, mx::float32},
                                std::make_shared<Attention>(s, scale, causal),
                                {mx::contiguous(q, false, s), mx::contiguous(k, false, s), mx::contiguous(v, false, s)});
}

std::vector<mx::array> attention_grads(const mx::array& q, const mx::array& k, const mx::array& v, const mx::array& out,
                                       const mx::array& lse, const mx::array& d_out, float scale, bool causal) {
  check_attention("attention_grads", q, k, v, causal);
  require_float32("attention_grads", {out, lse, d_out});
  const mx::Shape tokens{q.shape(0), q.shape(2), q.shape(1) * q.shape(3)};
  if (out.shape() != tokens || d_out.shape() != tokens || lse.shape() != mx::Shape{q.shape(0), q.shape(1), q.shape(2)}) {
    throw std::invalid_argument("[yourai native attention_grads] out and d_out must be [B, L, Hq * D], lse [B, Hq, L]");
  }
  auto s = cpu_stream();
  return mx::array::make_arrays({q.shape(), k.shape(), v.shape()}, {mx::float32, mx::float32, mx::float32},
                                std::make_shared<AttentionGrads>(s, scale, causal),
                                {mx::contiguous(q, false, s), mx::contiguous(k, false, s), mx::contiguous(v, false, s),
                                 mx::contiguous(out, false, s), mx::contiguous(lse, false, s), mx::contiguous(d_out, false, s)});
}

}  // namespace

NB_MODULE(_yourai_native, m) {
  m.doc() = "yourai's fused float32 CPU kernels (built on first use; see yourai/models/native)";
  m.def("swiglu", &swiglu, nb::arg("gate"), nb::arg("x"), "silu(gate) * x");
  m.def("swiglu_grads", &swiglu_grads, nb::arg("gate"), nb::arg("x"), nb::arg("d_out"), nb::arg("with_value"),
        "[silu(gate) * x if with_value], d_gate, d_x");
  m.def("softmax_rows", &softmax_rows, nb::arg("scores"), nb::arg("causal_queries") = 0,
        "[softmax over the last axis, its log-sum-exp [..., 1]]; causal_queries > 0: rows are that many queries "
        "(repeated), the last of the keys, each seeing the keys up to itself");
  m.def("softmax_grad_rows", &softmax_grad_rows, nb::arg("scores"), nb::arg("lse"), nb::arg("d_weights"), nb::arg("delta"),
        nb::arg("causal_queries") = 0, "[e^(scores - lse), e^(scores - lse) * (d_weights - delta)], masked as softmax_rows");
  m.def("cross_entropy_rows", &cross_entropy_rows, nb::arg("logits"), nb::arg("targets"), nb::arg("with_grad"),
        "[token CE [N], (softmax - onehot) [N, V] if with_grad]");
  m.def("rms_norm", &rms_norm, nb::arg("x"), nb::arg("weight"), nb::arg("eps"), "x * weight / sqrt(mean(x^2) + eps) over the last axis");
  m.def("rms_norm_grads", &rms_norm_grads, nb::arg("x"), nb::arg("weight"), nb::arg("d_out"), nb::arg("eps"),
        nb::arg("with_value"), "[rms_norm(x, weight, eps) if with_value], d_x (the weight's gradient is not formed)");
  m.def("rope", &rope, nb::arg("x"), nb::arg("dims"), nb::arg("traditional"), nb::arg("base"), nb::arg("scale"),
        nb::arg("offset"), nb::arg("backward"),
        "mx.fast.rope of x [B, L, H, D] as [B, H, L, D]; backward: rotated back from [B, H, L, D] to [B, L, H, D]");
  m.def("attention", &attention, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("scale"), nb::arg("causal"),
        "[softmax(q k^T * scale) v as [B, L, Hq * D], each row's log-sum-exp [B, Hq, L]]; q [B, Hq, L, D], "
        "k and v [B, Hkv, S, D]; causal: the queries are the last L positions, each seeing the keys up to itself");
  m.def("attention_grads", &attention_grads, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
        nb::arg("d_out"), nb::arg("scale"), nb::arg("causal"), "[dq, dk, dv] of attention for d_out [B, L, Hq * D]");
  m.def("threads", &max_threads, "threads a kernel may use (YOURAI_NATIVE_THREADS, else the machine's cores)");
}
