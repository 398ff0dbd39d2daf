// Fused float32 CPU kernels for the parts of a training step MLX's CPU wheels run one scalar
// libm call per element: SwiGLU, a row softmax and its gradient, and a row cross-entropy.
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
inline float exp_f32(float x) {
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

inline float sigmoid_f32(float x) {
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

// ------------------------------------------------------------------ row softmax

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
          const float* s = scores + row * width;
          float* p = probs + row * width;
          const int64_t seen = causal.visible(row, width);
          const float peak = row_max(s, seen);
          const float total = exp_sum(s, peak, p, seen);
          const float inverse = 1.0f / total;
          for (int64_t j = 0; j < seen; ++j) p[j] *= inverse;
          std::fill(p + seen, p + width, 0.0f);
          lse[row] = peak + std::log(total);
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
          const int64_t at = row * width, seen = causal.visible(row, width);
          const float shift = lse[row], d = delta[row];
          for (int64_t j = 0; j < seen; ++j) {
            const float w = exp_f32(scores[at + j] - shift);
            weights[at + j] = w;
            d_scores[at + j] = w * (d_weights[at + j] - d);
          }
          std::fill(weights + at + seen, weights + at + width, 0.0f);
          std::fill(d_scores + at + seen, d_scores + at + width, 0.0f);
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
  m.def("threads", &max_threads, "threads a kernel may use (YOURAI_NATIVE_THREADS, else the machine's cores)");
}
