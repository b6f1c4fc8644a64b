package peft

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/lathe-ml/lathe/internal/torchrand"
)

// CombineOptions chooses how CombineWith combines LoRA adapters, with the parameters of PEFT's
// LoraModel.add_weighted_adapter.
type CombineOptions struct {
	// Method is the combination_type: "cat", "linear", "svd", "ties", "ties_svd", "dare_linear",
	// "dare_linear_svd", "dare_ties", "dare_ties_svd", "magnitude_prune" or
	// "magnitude_prune_svd".
	Method string
	// Density is the fraction of values kept by the pruning methods (ties, dare_*,
	// magnitude_prune); 1 or more prunes nothing.
	Density float64
	// MajoritySign is ties' sign election: "total" (default) or "frequency".
	MajoritySign string
	// SVDRank is the rank of the *svd methods' result; 0 means the largest rank combined.
	SVDRank int
	// Seed is the torch.manual_seed(Seed) made before PEFT's add_weighted_adapter: DARE's random
	// pruning draws the masks torch's CPU generator draws there (package torchrand).
	Seed uint64
	// InitLoraWeights is the init_lora_weights of the first adapter's config, which PEFT copies
	// to the new adapter and whose initialization draws from the generator before the masks
	// (true: kaiming_uniform_ of A once more; false: only nn.Linear's own initialization).
	// Nil reads it from the first adapter's config.
	InitLoraWeights *bool
}

// Methods lists the combination types CombineWith accepts, and RankKeeping says which keep the
// rank of the adapters: cat's rank is the sum of theirs, the *svd methods' is SVDRank (or the
// largest), and linear, ties, dare_linear, dare_ties and magnitude_prune need adapters of one
// rank and keep it (they combine A and B separately).
var Methods = []string{"cat", "linear", "svd", "ties", "ties_svd", "dare_linear", "dare_linear_svd", "dare_ties",
	"dare_ties_svd", "magnitude_prune", "magnitude_prune_svd"}

// RankKeeping reports whether method's result has the adapters' (common) rank.
func RankKeeping(method string) bool {
	switch method {
	case "linear", "ties", "dare_linear", "dare_ties", "magnitude_prune":
		return true
	}
	return false
}

// CombineWith combines LoRA adapters of one model into one, as PEFT's add_weighted_adapter does
// with the same combination_type, weights and density:
//
//   - cat: see Combine (ranks concatenated; ΔW = Σ w_i·s_i·B_i·A_i exactly).
//   - linear, ties, dare_linear, dare_ties, magnitude_prune: A and B are each merged over the
//     adapters by merge_utils' function of that name (pruning each adapter's A and B separately
//     to Density), A with weights sign(w_i·s_i)·sqrt(|w_i·s_i|) and B with sqrt(|w_i·s_i|), so
//     that a negative weight negates the adapter; all ranks must be equal.
//   - *svd: the merge_utils function is applied to the full ΔW_i = s_i·B_i·A_i with weights
//     w_i·s_i (PEFT applies the scale twice here), and the result is truncated by SVD to SVDRank:
//     B = U·S, A = Vᵀ.
//
// The result has lora_alpha = r (scale 1), like PEFT's. DARE's pruning keeps each value with
// probability Density and rescales the kept ones by 1/Density (random_pruning with rescale, as
// PEFT does since it assigns the division; PEFT up to 0.10 discarded it). Its masks are the
// ones torch.bernoulli draws on the CPU after torch.manual_seed(Seed) in add_weighted_adapter:
// first the new adapter's initialization consumes the generator (inject_adapter: for every new
// module in the model's order, nn.Linear's kaiming init of A [r, in] and of B [out, r], and with
// init_lora_weights true A's again), then each module draws a mask for every adapter's A in turn,
// then for every adapter's B (for the *svd methods, one per adapter's ΔW [out, in]). This holds
// for adapters whose tensors PEFT holds as float32 on the CPU (a GPU draws from another
// generator).
func CombineWith(weights []float64, o CombineOptions, adapters ...*Adapter) (*Adapter, error) {
	if o.Method == "cat" || o.Method == "" {
		return Combine(weights, adapters...)
	}
	known := false
	for _, m := range Methods {
		known = known || m == o.Method
	}
	if !known {
		return nil, fmt.Errorf("combine: method %q is not one of %s", o.Method, strings.Join(Methods, ", "))
	}
	if o.Density < 0 || math.IsNaN(o.Density) {
		return nil, fmt.Errorf("combine: density %v must be >= 0", o.Density)
	}
	if o.MajoritySign == "" {
		o.MajoritySign = "total"
	}
	if o.MajoritySign != "total" && o.MajoritySign != "frequency" {
		return nil, fmt.Errorf("combine: majority sign method %q is not total or frequency", o.MajoritySign)
	}
	names, ranks, err := checkCombinable(weights, adapters)
	if err != nil {
		return nil, err
	}
	svd := strings.HasSuffix(o.Method, "_svd") || o.Method == "svd"
	base := strings.TrimSuffix(o.Method, "_svd")
	if o.Method == "svd" {
		base = "linear"
	}
	rank := ranks[0]
	for i, r := range ranks {
		if svd {
			rank = max(rank, r)
		} else if r != ranks[0] {
			return nil, fmt.Errorf("combine: %s needs adapters of one rank; adapter %d has r=%d, adapter 0 r=%d (use cat or svd)", o.Method, i, r, ranks[0])
		}
	}
	if svd && o.SVDRank > 0 {
		rank = o.SVDRank
	}
	first := adapters[0]
	cfg := first.Config
	cfg.R, cfg.LoraAlpha, cfg.UseRSLoRA = rank, float64(rank), false
	cfg.TargetModules = Names(names...)
	cfg.LoraDropout = 0
	out, err := newAdapter(cfg, first.model, first.backend)
	if err != nil {
		return nil, fmt.Errorf("combine: %w", err)
	}
	rng := torchrand.New(o.Seed)
	if base == "dare_linear" || base == "dare_ties" {
		initA, err := reinitsA(first.Config.InitLoraWeights, o.InitLoraWeights)
		if err != nil {
			out.Release()
			return nil, err
		}
		for _, md := range out.modules {
			rng.Skip(rank*md.In + md.Out*rank)
			if initA {
				rng.Skip(rank * md.In)
			}
		}
	}
	for _, md := range out.modules {
		var As, Bs [][]float64
		var ws, wsA, scales []float64
		var rs []int
		for i, a := range adapters {
			src := a.byName[md.Name]
			if src == nil {
				continue
			}
			keys := src.keys(TypeLoRA)
			av, err := a.tensors[keys[0]].Float32()
			if err != nil {
				out.Release()
				return nil, fmt.Errorf("combine: %w", err)
			}
			bv, err := a.tensors[keys[1]].Float32()
			if err != nil {
				out.Release()
				return nil, fmt.Errorf("combine: %w", err)
			}
			ws, scales = append(ws, weights[i]*float64(src.Scale)), append(scales, float64(src.Scale))
			As, Bs, rs = append(As, to64(av)), append(Bs, to64(bv)), append(rs, src.R)
		}
		var A, B []float64
		if !svd {
			wsA = make([]float64, len(ws))
			for i, w := range ws {
				ws[i] = math.Sqrt(math.Abs(w))
				wsA[i] = math.Copysign(ws[i], w)
			}
			A = mergeTask(base, As, wsA, o, rng)
			B = mergeTask(base, Bs, ws, o, rng)
		} else {
			deltas := make([][]float64, len(As))
			for i := range As {
				deltas[i] = deltaW(As[i], Bs[i], md.Out, md.In, rs[i], scales[i])
			}
			dw := mergeTask(base, deltas, ws, o, rng)
			if A, B, err = svdTruncate(dw, md.Out, md.In, rank); err != nil {
				out.Release()
				return nil, fmt.Errorf("combine %s: %w", md.Name, err)
			}
		}
		keys := md.keys(TypeLoRA)
		if err := out.upload(keys[0], md.graphShape(keys[0]), to32(A)); err != nil {
			out.Release()
			return nil, err
		}
		if err := out.upload(keys[1], md.graphShape(keys[1]), to32(B)); err != nil {
			out.Release()
			return nil, err
		}
	}
	return out, nil
}

// reinitsA says whether PEFT's initialization of the new adapter draws A's kaiming_uniform_
// after nn.Linear's own init: for init_lora_weights true, not for false or "pissa" (which draw
// nothing more). "gaussian" draws normals, whose consumption of the generator is not reproduced:
// set CombineOptions.InitLoraWeights to say what to assume.
func reinitsA(init any, override *bool) (bool, error) {
	if override != nil {
		return *override, nil
	}
	switch v := init.(type) {
	case nil:
		return true, nil // PEFT's default
	case bool:
		return v, nil
	case string:
		if v == InitPiSSA {
			return false, nil
		}
	}
	return false, fmt.Errorf("combine: PEFT's DARE masks for the same seed depend on the draws of init_lora_weights %v, which lathe does not reproduce (set the initialization to assume)", init)
}

func to64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func to32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// deltaW is s·B·A ([out, in]).
func deltaW(A, B []float64, out, in, r int, s float64) []float64 {
	d := make([]float64, out*in)
	for o := 0; o < out; o++ {
		row := d[o*in : (o+1)*in]
		for k := 0; k < r; k++ {
			b := s * B[o*r+k]
			for i, a := range A[k*in : (k+1)*in] {
				row[i] += b * a
			}
		}
	}
	return d
}

// mergeTask is merge_utils' task_arithmetic, ties, dare_linear, dare_ties or magnitude_prune
// over task tensors of one size.
func mergeTask(method string, tasks [][]float64, w []float64, o CombineOptions, rng *torchrand.MT19937) []float64 {
	pruned := make([][]float64, len(tasks))
	for i, t := range tasks {
		switch method {
		case "ties", "magnitude_prune":
			pruned[i] = pruneMagnitude(t, o.Density)
		case "dare_linear", "dare_ties":
			pruned[i] = pruneRandom(t, o.Density, rng)
		default:
			pruned[i] = t
		}
	}
	n := len(tasks[0])
	out := make([]float64, n)
	if method == "ties" || method == "dare_ties" {
		// Elect each element's sign on the unweighted pruned tensors, then average the weighted
		// values that agree with it (disjoint_merge).
		for j := 0; j < n; j++ {
			var mag float64
			for _, t := range pruned {
				if o.MajoritySign == "total" {
					mag += t[j]
				} else {
					mag += sign(t[j])
				}
			}
			major := 1.0
			if mag < 0 {
				major = -1
			}
			var sum float64
			count := 0
			for i, t := range pruned {
				if sign(t[j]) == major {
					sum += t[j] * w[i]
					count++
				}
			}
			out[j] = sum / float64(max(count, 1))
		}
		return out
	}
	for i, t := range pruned {
		for j, x := range t {
			out[j] += x * w[i]
		}
	}
	return out
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// pruneMagnitude keeps the int(density·n) values of largest magnitude (magnitude_based_pruning);
// density >= 1 keeps everything.
func pruneMagnitude(t []float64, density float64) []float64 {
	if density >= 1 {
		return t
	}
	k := int(density * float64(len(t)))
	idx := make([]int, len(t))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return math.Abs(t[idx[a]]) > math.Abs(t[idx[b]]) })
	out := make([]float64, len(t))
	for _, i := range idx[:k] {
		out[i] = t[i]
	}
	return out
}

// pruneRandom keeps each value where torch.bernoulli(full_like(t, density)) draws 1 and
// rescales it by 1/density (random_pruning with rescale); density >= 1 draws nothing.
func pruneRandom(t []float64, density float64, rng *torchrand.MT19937) []float64 {
	if density >= 1 {
		return t
	}
	out := make([]float64, len(t))
	p := float32(density) // full_like of a float32 tensor
	for i, x := range t {
		if rng.Bernoulli(p) {
			out[i] = x / density
		}
	}
	return out
}

// svdTruncate factors d ([out, in]) into its best rank-r approximation B·A with B = U·S ([out,
// r]) and A = Vᵀ ([r, in]), as PEFT's _svd_generalized_task_arithmetic_weighted_adapter.
func svdTruncate(d []float64, out, in, r int) (A, B []float64, err error) {
	if r > min(out, in) {
		return nil, nil, fmt.Errorf("svd rank %d exceeds min(out %d, in %d)", r, out, in)
	}
	var s mat.SVD
	if !s.Factorize(mat.NewDense(out, in, d), mat.SVDThin) {
		return nil, nil, fmt.Errorf("SVD did not converge")
	}
	var u, v mat.Dense
	s.UTo(&u)
	s.VTo(&v)
	vals := s.Values(nil)
	A = make([]float64, r*in)
	B = make([]float64, out*r)
	for k := 0; k < r; k++ {
		for i := 0; i < in; i++ {
			A[k*in+i] = v.At(i, k)
		}
		for o := 0; o < out; o++ {
			B[o*r+k] = u.At(o, k) * vals[k]
		}
	}
	return A, B, nil
}
