// pointkd's CPU kernels: the students' sampling and neighbour searches and the gathered
// max-pools of their local stages (see native.py beside this file for what each computes and
// the equalities with the PyTorch ops that the tests check).
//
// Built on first use by native.py with torch.utils.cpp_extension, for the CPU it runs on
// (-march=native unless POINTKD_NATIVE_MARCH says otherwise), into a cache directory whose
// name hashes this source, the flags, the compiler, torch and the CPU's instruction sets, so
// a binary is never loaded on a CPU it was not built for. -ffp-contract=off: no fused
// multiply-add anywhere: the FPS distances are (dx*dx + dy*dy) + dz*dz with every product and
// sum rounded, as ops._fps computes them, so they equal torch's on every CPU and every torch
// CPU capability (torch's vectorised addcmul_ fuses, its scalar kernel does not).
// The AVX-512 paths are under `#if defined(__AVX512F__)`; every kernel has a portable path.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef float f16v __attribute__((vector_size(64)));
typedef int32_t i16v __attribute__((vector_size(64)));

// mind = min(mind, d) and the first index of the largest mind (NaNs never chosen; n - 1 if
// every value is NaN). 16 running maxima with their first indices, one per vector lane, held
// in registers (GCC vectors: the plain loop kept them in memory behind a branch); combined,
// they give the lowest index at the max.
static inline int64_t update_min_argmax(float* __restrict__ mind, const float* __restrict__ d,
                                        int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  f16v lanes = f16v{} + ninf;
  i16v at = i16v{}, pos = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    f16v m, v;
    std::memcpy(&m, mind + j, sizeof m);
    std::memcpy(&v, d + j, sizeof v);
    v = m < v ? m : v;
    std::memcpy(mind + j, &v, sizeof v);
    const auto up = v > lanes;
    lanes = up ? v : lanes;
    at = up ? pos : at;
    pos += 16;
  }
  // the largest lane, then the lowest index among the lanes holding it; branch-free (the
  // winner's lane is unpredictable: a branch here mispredicts at every FPS step)
  float best = ninf;
  for (int t = 0; t < 16; ++t) best = lanes[t] > best ? lanes[t] : best;
  int32_t first = std::numeric_limits<int32_t>::max();
  for (int t = 0; t < 16; ++t) first = (lanes[t] == best && at[t] < first) ? at[t] : first;
  int64_t arg = best == ninf ? -1 : first;
  for (; j < n; ++j) {  // the tail: indices above every lane's, so ties keep the earlier
    const float v = mind[j] < d[j] ? mind[j] : d[j];
    mind[j] = v;
    if (v > best) {
      best = v;
      arg = j;
    }
  }
  return arg >= 0 ? arg : n - 1;
}

// A squared distance and its index as one sortable integer: non-negative floats order as their
// bit patterns, so sorting the keys orders by (distance, index): ties keep the lowest index.
// NaN sorts as +inf.
static inline uint64_t sq_key(float v, int64_t j) {
  if (!(v == v)) v = std::numeric_limits<float>::infinity();
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return ((uint64_t)bits << 32) | (uint64_t)j;
}

// An upper bound of the k-th smallest of the 64 non-negative floats g, at most 2^-8
// (relative) above it: the top 16 bits of its bit pattern (non-negative floats order as their
// bits), found from the top bit down by counting the values below each candidate. Branch-free
// with AVX-512, where nth_element's mispredicted branches cost more than the rest of the
// selection.
static inline float kth_bound(float* g, int64_t k) {
#if defined(__AVX512F__)
  const __m512i g0 = _mm512_loadu_si512(g), g1 = _mm512_loadu_si512(g + 16),
                g2 = _mm512_loadu_si512(g + 32), g3 = _mm512_loadu_si512(g + 48);
  uint32_t ans = 0;
  for (int bit = 30; bit >= 15; --bit) {
    const uint32_t cand = ans | (1u << bit);
    const __m512i c = _mm512_set1_epi32((int32_t)cand);
    const int below = __builtin_popcount((unsigned)_mm512_cmplt_epi32_mask(g0, c)) +
                      __builtin_popcount((unsigned)_mm512_cmplt_epi32_mask(g1, c)) +
                      __builtin_popcount((unsigned)_mm512_cmplt_epi32_mask(g2, c)) +
                      __builtin_popcount((unsigned)_mm512_cmplt_epi32_mask(g3, c));
    ans = below < k ? cand : ans;
  }
  ans |= (1u << 15) - 1;  // past +inf this is a NaN: no candidate, and the caller takes all
  float bound;
  std::memcpy(&bound, &ans, sizeof bound);
  return bound;
#else
  std::nth_element(g, g + (k - 1), g + 64);
  return g[k - 1];
#endif
}

// The k smallest of the n >= k squared distances d, ascending by (distance, index), into
// out_d/out_j (NaN as +inf). tau, (a bound of) the k-th smallest minimum of 64 strided groups,
// bounds the k-th smallest distance (k groups each hold a value <= tau), so only values
// <= tau are candidates — on clouds, a few more than k (18 on average for k = 16 of 1,024
// points of ModelNet40) — collected in one vectorised pass.
// Scratch: cd, cj and keys of n + 16 entries.
static void k_smallest(const float* __restrict__ d, int64_t n, int64_t k,
                       float* __restrict__ out_d, int64_t* __restrict__ out_j,
                       float* __restrict__ cd, int32_t* __restrict__ cj,
                       uint64_t* __restrict__ keys, float* __restrict__ given_gm = nullptr) {
  constexpr int64_t L = 64;
  const float inf = std::numeric_limits<float>::infinity();
  float tau = inf;
  if (n >= L && k <= L) {
    float own[L];
    float* gm = given_gm;  // the group minima, when the caller's pass made them
    if (gm == nullptr) {
      gm = own;
      for (int64_t l = 0; l < L; ++l) gm[l] = inf;
      int64_t r = 0;
      for (; r + L <= n; r += L)
        for (int64_t l = 0; l < L; ++l) gm[l] = d[r + l] < gm[l] ? d[r + l] : gm[l];
      for (int64_t l = 0; r + l < n; ++l) gm[l] = d[r + l] < gm[l] ? d[r + l] : gm[l];
    }
    tau = kth_bound(gm, k);
  }
  int64_t cnt = 0, j = 0;
#if defined(__AVX512F__)
  // register compress, then a plain store (compress-to-memory is slow on some CPUs)
  const __m512 tv = _mm512_set1_ps(tau);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_loadu_ps(d + j);
    const __mmask16 hit = _mm512_cmp_ps_mask(v, tv, _CMP_LE_OQ);
    // stored whether or not any value hit (a branch on it would mispredict often)
    _mm512_storeu_ps(cd + cnt, _mm512_maskz_compress_ps(hit, v));
    _mm512_storeu_si512(cj + cnt, _mm512_maskz_compress_epi32(hit, iv));
    cnt += __builtin_popcount((unsigned)hit);
    iv = _mm512_add_epi32(iv, step);
  }
#endif
  for (; j < n; ++j) {
    cd[cnt] = d[j];
    cj[cnt] = (int32_t)j;
    cnt += d[j] <= tau;
  }
  if (cnt >= k) {
    for (int64_t c = 0; c < cnt; ++c) keys[c] = sq_key(cd[c], cj[c]);
  } else {  // NaNs among the k nearest: every value is a candidate
    cnt = n;
    for (int64_t c = 0; c < n; ++c) keys[c] = sq_key(d[c], c);
  }
  if (cnt <= 64) {
    // a few candidates: each one's rank by counting the smaller keys (keys are distinct,
    // branch-free, vectorised), the k first in their places
    for (int64_t c = 0; c < cnt; ++c) {
      int64_t rank = 0;
      for (int64_t e = 0; e < cnt; ++e) rank += keys[e] < keys[c];
      if (rank < k) out_j[rank] = (int64_t)(keys[c] & 0xffffffffu);
    }
  } else {
    std::nth_element(keys, keys + (k - 1), keys + cnt);
    std::sort(keys, keys + k);
    for (int64_t q = 0; q < k; ++q) out_j[q] = (int64_t)(keys[q] & 0xffffffffu);
  }
  for (int64_t q = 0; q < k; ++q) out_d[q] = d[out_j[q]];
}

#if defined(__AVX512F__)
// One FPS step in one pass over the cloud (n a multiple of 16): the distances d to the
// current sample (the same operations as the scalar loop: a product, then two fused
// multiply-adds), mind = min(mind, d), the lanes' first maxima of mind (as
// update_min_argmax) and the minima of 64 strided groups of d (as k_smallest). Returns the
// next sample.
static inline int64_t fps_step(const float* __restrict__ x, const float* __restrict__ y,
                               const float* __restrict__ z, float cx, float cy, float cz,
                               float* __restrict__ d, float* __restrict__ mind, int64_t n,
                               float* __restrict__ gm) {
  const __m512 vx = _mm512_set1_ps(cx), vy = _mm512_set1_ps(cy), vz = _mm512_set1_ps(cz);
  const float ninf = -std::numeric_limits<float>::infinity();
  __m512 lanes = _mm512_set1_ps(ninf);
  __m512 g[4];
  for (int r = 0; r < 4; ++r) g[r] = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512i at = _mm512_setzero_si512();
  __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  for (int64_t j = 0; j < n; j += 16) {
    __m512 t = _mm512_sub_ps(_mm512_loadu_ps(x + j), vx);
    __m512 e = _mm512_mul_ps(t, t);
    t = _mm512_sub_ps(_mm512_loadu_ps(y + j), vy);
    e = _mm512_add_ps(e, _mm512_mul_ps(t, t));
    t = _mm512_sub_ps(_mm512_loadu_ps(z + j), vz);
    const __m512 dv = _mm512_add_ps(e, _mm512_mul_ps(t, t));
    _mm512_storeu_ps(d + j, dv);
    // min(a, b) is a < b ? a : b, NaN and ties taking b: the scalar loops' selections
    const __m512 v = _mm512_min_ps(_mm512_loadu_ps(mind + j), dv);
    _mm512_storeu_ps(mind + j, v);
    const __mmask16 up = _mm512_cmp_ps_mask(v, lanes, _CMP_GT_OQ);
    lanes = _mm512_mask_mov_ps(lanes, up, v);
    at = _mm512_mask_mov_epi32(at, up, pos);
    pos = _mm512_add_epi32(pos, step);
    const int r = (int)((j >> 4) & 3);
    g[r] = _mm512_min_ps(dv, g[r]);
  }
  for (int r = 0; r < 4; ++r) _mm512_storeu_ps(gm + 16 * r, g[r]);
  float lv[16];
  int32_t li[16];
  _mm512_storeu_ps(lv, lanes);
  _mm512_storeu_si512(li, at);
  float best = ninf;
  for (int t2 = 0; t2 < 16; ++t2) best = lv[t2] > best ? lv[t2] : best;
  int32_t first = std::numeric_limits<int32_t>::max();
  for (int t2 = 0; t2 < 16; ++t2) first = (lv[t2] == best && li[t2] < first) ? li[t2] : first;
  return best == ninf ? n - 1 : first;
}
#endif

// Per cloud: FPS from point 0 (ties: lowest index), the k nearest points of every sample
// (k_smallest: ascending, ties to the lowest index), and the first `rows` distance rows.
std::vector<torch::Tensor> fps_knn(torch::Tensor xyz, int64_t m, int64_t k, int64_t rows) {
  TORCH_CHECK(xyz.dim() == 3 && xyz.size(2) == 3 && xyz.scalar_type() == torch::kFloat,
              "fps_knn: expected float (B, N, 3)");
  auto pts = xyz.contiguous();
  const int64_t B = pts.size(0), N = pts.size(1);
  TORCH_CHECK(0 < m && m <= N && 0 < k && k <= N && 0 <= rows && rows <= m, "fps_knn: sizes");
  auto idx = torch::empty({B, m}, torch::kLong);
  auto nbr = torch::empty({B, m, k}, torch::kLong);
  auto sq = torch::empty({B, m, k}, torch::kFloat);
  auto table = torch::empty({B, rows, N}, torch::kFloat);
  const float* P = pts.data_ptr<float>();
  int64_t* I = idx.data_ptr<int64_t>();
  int64_t* NB = nbr.data_ptr<int64_t>();
  float* SQ = sq.data_ptr<float>();
  float* T = table.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> x(N), y(N), z(N), mind(N), d(N), cd(N + 16);
    std::vector<int32_t> cj(N + 16);
    std::vector<uint64_t> keys(N + 16);
    float gm[64];
    for (int64_t b = b0; b < b1; ++b) {
      const float* p = P + b * N * 3;
      for (int64_t j = 0; j < N; ++j) {
        x[j] = p[3 * j]; y[j] = p[3 * j + 1]; z[j] = p[3 * j + 2];
        mind[j] = std::numeric_limits<float>::infinity();
      }
      int64_t far = 0;
      for (int64_t i = 0; i < m; ++i) {
        I[b * m + i] = far;
        const float cx = x[far], cy = y[far], cz = z[far];
        int64_t next;
        float* given = nullptr;
#if defined(__AVX512F__)
        if (N % 16 == 0 && N >= 64) {
          next = fps_step(x.data(), y.data(), z.data(), cx, cy, cz, d.data(), mind.data(), N,
                          gm);
          given = gm;
        } else
#endif
        {
          for (int64_t j = 0; j < N; ++j) {
            float t = x[j] - cx;
            float e = t * t;
            t = y[j] - cy;
            e += t * t;  // a product, then a sum: two roundings, as ops._fps (no FMA)
            t = z[j] - cz;
            d[j] = e + t * t;
          }
          next = update_min_argmax(mind.data(), d.data(), N);
        }
        if (i < rows) std::copy(d.begin(), d.end(), T + (b * rows + i) * N);
        k_smallest(d.data(), N, k, SQ + (b * m + i) * k, NB + (b * m + i) * k, cd.data(),
                   cj.data(), keys.data(), given);
        far = next;
      }
    }
  });
  return {idx, nbr, sq, table};
}

// Channels [c, c + W) of one group of the gathered pool (see gathered_max), the running
// values held in registers: each neighbour's row is read twice from cache (max pass, then
// hits and sums) instead of being copied out and re-read through accumulators in memory.
// Per channel the sums run over k in order, so the results are the same floats as a plain
// loop. V is float for the tail channels, or a 16-lane GCC vector: compilers do not
// vectorise the loop nest by themselves (their outer-loop vectoriser gives up on it).
template <typename V>
static inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V>
static inline void store(float* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

template <typename V>
static inline void pool_channels(const float* __restrict__ X, const int64_t* __restrict__ ix,
                                 int64_t K, int64_t C, const float* __restrict__ ce,
                                 const float* __restrict__ sgn, const float* __restrict__ sh,
                                 float* __restrict__ tp_out, float* __restrict__ zs_out,
                                 int64_t* __restrict__ wn_out, double* __restrict__ a1,
                                 double* __restrict__ a2, bool& tied) {
  constexpr int W = sizeof(V) / sizeof(float);
  const V sg = load<V>(sgn), cv = load<V>(ce), shv = load<V>(sh);
  const V zero = load<V>(std::array<float, W>{}.data());
  const V one = zero + 1.f, kmax = zero + (float)K;
  // max of sgn·z, times sgn: the max or the min of z, exactly (sign flips are exact)
  V mx = sg * (load<V>(X + ix[0] * C) + cv);
  for (int64_t k = 1; k < K; ++k) {
    const V v = sg * (load<V>(X + ix[k] * C) + cv);
    mx = v > mx ? v : mx;
  }
  const V tp = sg * mx;
  V cnt = zero, wk = kmax, zs = zero, f1 = zero, f2 = zero;
  // count the neighbours at the max, keep the first that is, add z to the sums
  for (int64_t k = 0; k < K; ++k) {
    const V v = load<V>(X + ix[k] * C) + cv;
    const V kf = zero + (float)k;
    const V cand = v == tp ? kf : kmax;
    cnt += v == tp ? one : zero;
    wk = cand < wk ? cand : wk;
    zs += v;
    const V d = v - shv;
    f1 += d;
    f2 += d * d;
  }
  float w[W], c1[W], c2[W], n[W];
  store(tp_out, tp);
  store(zs_out, zs);
  store(w, wk);
  store(c1, f1);
  store(c2, f2);
  store(n, cnt);
  bool any = false;
  for (int t = 0; t < W; ++t) {
    wn_out[t] = ix[(int64_t)w[t]];
    a1[t] += c1[t];
    a2[t] += c2[t];
    any |= n[t] > 1.5f;
  }
  tied = tied || any;
}

// Training forward of the gathered pool z[g, k] = x[index[g, k]] + centre[g]: per (group,
// channel) the max (gamma >= 0) or min of z over k and the x row it came from, whether
// another k reached the same value (a tie), the sum over k, and per channel the sums of
// (z - shift) and (z - shift)^2 in double.
std::vector<torch::Tensor> gathered_max(torch::Tensor x, torch::Tensor index,
                                        torch::Tensor centre, torch::Tensor gamma,
                                        torch::Tensor shift) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.is_contiguous() && index.is_contiguous() &&
              centre.is_contiguous(), "gathered_max: expected contiguous float tensors");
  const int64_t G = index.size(0), K = index.size(1), C = x.size(1);
  auto top = torch::empty({G, C}, torch::kFloat);
  auto winner = torch::empty({G, C}, torch::kLong);
  auto zsum = torch::empty({G, C}, torch::kFloat);
  auto tied = torch::zeros({G}, torch::kBool);
  auto s1 = torch::zeros({C}, torch::kDouble);
  auto s2 = torch::zeros({C}, torch::kDouble);
  auto neg = gamma.lt(0).contiguous();
  auto sh = shift.contiguous();
  const float* X = x.data_ptr<float>();
  const int64_t* IX = index.data_ptr<int64_t>();
  const float* CE = centre.data_ptr<float>();
  const bool* NEG = neg.data_ptr<bool>();
  const float* SH = sh.data_ptr<float>();
  float* TP = top.data_ptr<float>();
  int64_t* WN = winner.data_ptr<int64_t>();
  float* ZS = zsum.data_ptr<float>();
  bool* TD = tied.data_ptr<bool>();
  double* S1 = s1.data_ptr<double>();
  double* S2 = s2.data_ptr<double>();
  std::mutex lock;
  at::parallel_for(0, G, 64, [&](int64_t g0, int64_t g1) {
    std::vector<double> a1(C, 0.0), a2(C, 0.0);
    std::vector<float> sgn(C);  // +1, or -1 where the min is taken
    for (int64_t c = 0; c < C; ++c) sgn[c] = NEG[c] ? -1.f : 1.f;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t* ix = IX + g * K;
      const float* ce = CE + g * C;
      bool t = false;
      int64_t c0 = 0;
      for (; c0 + 16 <= C; c0 += 16)
        pool_channels<f16v>(X + c0, ix, K, C, ce + c0, sgn.data() + c0, SH + c0,
                          TP + g * C + c0, ZS + g * C + c0, WN + g * C + c0, a1.data() + c0,
                          a2.data() + c0, t);
      for (; c0 < C; ++c0)
        pool_channels<float>(X + c0, ix, K, C, ce + c0, sgn.data() + c0, SH + c0,
                         TP + g * C + c0, ZS + g * C + c0, WN + g * C + c0, a1.data() + c0,
                         a2.data() + c0, t);
      TD[g] = t;
    }
    std::lock_guard<std::mutex> guard(lock);
    for (int64_t c = 0; c < C; ++c) { S1[c] += a1[c]; S2[c] += a2[c]; }
  });
  return {top, winner, tied, zsum, s1, s2};
}

// Backward of the gathered pool into dx (layers._gathered_backward): dx[j] = (x[j]·alpha)·cnt_j
// with cnt_j the times row j is a neighbour, then dx[index[g, k]] += offset + centre[g]·alpha
// for every slot, and dx[winner[g, c], c] += sparse[g, c] for groups without ties. The same
// operations, in the same order, as the PyTorch path; the scatter is serial (no write races).
void gathered_backward(torch::Tensor dx, torch::Tensor x, torch::Tensor index,
                       torch::Tensor centre, torch::Tensor alpha, torch::Tensor offset,
                       torch::Tensor winner, torch::Tensor tied, torch::Tensor sparse) {
  TORCH_CHECK(dx.is_contiguous() && x.is_contiguous() && index.is_contiguous() &&
              centre.is_contiguous() && winner.is_contiguous() && sparse.is_contiguous() &&
              dx.scalar_type() == torch::kFloat && x.scalar_type() == torch::kFloat &&
              centre.scalar_type() == torch::kFloat, "gathered_backward: contiguous float");
  const int64_t R = x.size(0), G = index.size(0), K = index.size(1), C = x.size(1);
  auto al = alpha.contiguous();
  auto of = offset.contiguous();
  float* DX = dx.data_ptr<float>();
  const float* X = x.data_ptr<float>();
  const int64_t* IX = index.data_ptr<int64_t>();
  const float* CE = centre.data_ptr<float>();
  const float* AL = al.data_ptr<float>();
  const float* OF = of.data_ptr<float>();
  const int64_t* WN = winner.data_ptr<int64_t>();
  const bool* TD = tied.data_ptr<bool>();
  const float* SP = sparse.data_ptr<float>();
  std::vector<float> cnt(R, 0.f);
  for (int64_t j = 0; j < G * K; ++j) {
    TORCH_CHECK(0 <= IX[j] && IX[j] < R, "gathered_backward: index out of range");
    cnt[IX[j]] += 1.f;
  }
  at::parallel_for(0, R, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t j = r0; j < r1; ++j) {
      const float* __restrict__ xr = X + j * C;
      float* __restrict__ dr = DX + j * C;
      const float n = cnt[j];
      for (int64_t c = 0; c < C; ++c) dr[c] = (xr[c] * AL[c]) * n;
    }
  });
  std::vector<float> add(C);
  for (int64_t g = 0; g < G; ++g) {
    const float* __restrict__ ce = CE + g * C;
    for (int64_t c = 0; c < C; ++c) add[c] = OF[c] + ce[c] * AL[c];
    for (int64_t k = 0; k < K; ++k) {
      float* __restrict__ row = DX + IX[g * K + k] * C;
      for (int64_t c = 0; c < C; ++c) row[c] += add[c];
    }
    if (TD[g]) continue;
    for (int64_t c = 0; c < C; ++c) DX[WN[g * C + c] * C + c] += SP[g * C + c];
  }
}

// Later stages' neighbourhoods: anchors are the first m FPS samples, points the first `refs`
// samples. Distances are computed from the coordinates with the very operations of the FPS
// loop above (so they equal its distance rows bit for bit) instead of being read from those
// rows: `refs` scattered reads per anchor miss the cache once a batch's rows outgrow it.
// Returns the k nearest as sample positions j < refs, ascending by distance (ties: lowest j),
// and their squared distances.
std::vector<torch::Tensor> prefix_knn(torch::Tensor xyz, torch::Tensor idx, int64_t m,
                                      int64_t refs, int64_t k) {
  TORCH_CHECK(xyz.dim() == 3 && xyz.size(2) == 3 && xyz.scalar_type() == torch::kFloat &&
              idx.dim() == 2 && idx.scalar_type() == torch::kLong &&
              idx.size(0) == xyz.size(0), "prefix_knn: expected float (B, N, 3), long (B, M0)");
  auto pts = xyz.contiguous();
  auto ix = idx.contiguous();
  const int64_t B = pts.size(0), N = pts.size(1), M0 = ix.size(1);
  TORCH_CHECK(0 < m && m <= refs && refs <= M0 && 0 < k && k <= refs, "prefix_knn: sizes");
  const int64_t* I = ix.data_ptr<int64_t>();
  for (int64_t j = 0; j < B * M0; ++j)
    TORCH_CHECK(0 <= I[j] && I[j] < N, "prefix_knn: index out of range");
  auto nbr = torch::empty({B, m, k}, torch::kLong);
  auto sq = torch::empty({B, m, k}, torch::kFloat);
  const float* P = pts.data_ptr<float>();
  int64_t* NB = nbr.data_ptr<int64_t>();
  float* SQ = sq.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> x(refs), y(refs), z(refs), d(refs), cd(refs + 16);
    std::vector<int32_t> cj(refs + 16);
    std::vector<uint64_t> keys(refs + 16);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t j = 0; j < refs; ++j) {
        const float* p = P + (b * N + I[b * M0 + j]) * 3;
        x[j] = p[0]; y[j] = p[1]; z[j] = p[2];
      }
      for (int64_t a = 0; a < m; ++a) {
        const float cx = x[a], cy = y[a], cz = z[a];
        for (int64_t j = 0; j < refs; ++j) {
          float t = x[j] - cx;
          float e = t * t;
          t = y[j] - cy;
          e += t * t;
          t = z[j] - cz;
          d[j] = e + t * t;
        }
        const int64_t r = b * m + a;
        k_smallest(d.data(), refs, k, SQ + r * k, NB + r * k, cd.data(), cj.data(),
                   keys.data());
      }
    }
  });
  return {nbr, sq};
}

// Inference of a local stage's pool: out[b, g] = act(max_k table[b, nbr[b, g, k]] + centre[b, g])
// (BatchNorm folded, so the max may come before the monotonic activation; NaNs propagate as
// in amax/relu). table (B, N, C), nbr (B, M, K), centre (B, M, C), all float32 but nbr.
torch::Tensor gather_max_act(torch::Tensor table, torch::Tensor nbr, torch::Tensor centre,
                             double slope) {
  TORCH_CHECK(table.dim() == 3 && nbr.dim() == 3 && centre.dim() == 3 &&
              table.scalar_type() == torch::kFloat && centre.scalar_type() == torch::kFloat &&
              nbr.scalar_type() == torch::kLong, "gather_max_act: dtypes/shapes");
  auto tb = table.contiguous();
  auto nb = nbr.contiguous();
  auto ce = centre.contiguous();
  const int64_t B = tb.size(0), N = tb.size(1), C = tb.size(2), M = nb.size(1), K = nb.size(2);
  TORCH_CHECK(nb.size(0) == B && ce.size(0) == B && ce.size(1) == M && ce.size(2) == C && K > 0,
              "gather_max_act: sizes");
  const int64_t* IX = nb.data_ptr<int64_t>();
  for (int64_t j = 0; j < B * M * K; ++j)
    TORCH_CHECK(0 <= IX[j] && IX[j] < N, "gather_max_act: index out of range");
  auto out = torch::empty({B, M, C}, torch::kFloat);
  const float* X = tb.data_ptr<float>();
  const float* CE = ce.data_ptr<float>();
  float* O = out.data_ptr<float>();
  const float s = (float)slope;
  at::parallel_for(0, B * M, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const float* __restrict__ T = X + (g / M) * N * C;
      const int64_t* ix = IX + g * K;
      float* __restrict__ o = O + g * C;
      const float* __restrict__ cg = CE + g * C;
      int64_t c0 = 0;
      // 16 channels at a time, the running max in a register (the plain loop below kept
      // it in memory: a load and a store per neighbour and channel)
      for (; c0 + 16 <= C; c0 += 16) {
        f16v mx, v;
        std::memcpy(&mx, T + ix[0] * C + c0, sizeof mx);
        for (int64_t q = 1; q < K; ++q) {
          std::memcpy(&v, T + ix[q] * C + c0, sizeof v);
          mx = ((v > mx) | (v != v)) ? v : mx;
        }
        std::memcpy(&v, cg + c0, sizeof v);
        v = mx + v;
        v = v < 0.f ? v * s : v;
        std::memcpy(o + c0, &v, sizeof v);
      }
      const float* __restrict__ first = T + ix[0] * C;
      for (int64_t c = c0; c < C; ++c) o[c] = first[c];
      for (int64_t q = 1; q < K; ++q) {
        const float* __restrict__ row = T + ix[q] * C;
        for (int64_t c = c0; c < C; ++c) {
          const float v = row[c];
          o[c] = (v > o[c] || v != v) ? v : o[c];
        }
      }
      for (int64_t c = c0; c < C; ++c) {
        const float v = o[c] + cg[c];
        o[c] = v < 0.f ? v * s : v;
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fps_knn", &fps_knn, "FPS with each sample's k nearest points and the first table rows");
  m.def("prefix_knn", &prefix_knn, "k nearest FPS-prefix points of the first m samples");
  m.def("gather_max_act", &gather_max_act, "inference pool: act(max_k table[nbr] + centre)");
  m.def("gathered_max", &gathered_max, "training pool forward (layers._BatchNormActMax)");
  m.def("gathered_backward", &gathered_backward, "training pool input gradient");
}
