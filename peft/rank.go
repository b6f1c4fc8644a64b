package peft

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/model/checkpoint"
)

// RankedModule is one module of a rank selection: its singular values and the rank kept.
type RankedModule struct {
	Module string `json:"module"`
	// Rank is the adapter's rank, Kept the rank that holds the energy asked for.
	Rank int `json:"rank"`
	Kept int `json:"kept"`
	// Energy is the share of Σσ² the kept directions hold.
	Energy float64 `json:"energy"`
	// Sigma are ΔW = s·B·A's singular values, largest first (Rank of them).
	Sigma []float64 `json:"sigma"`
}

// RankReport is what SelectRanks did.
type RankReport struct {
	Modules      []RankedModule `json:"modules"`
	ParamsBefore int64          `json:"params_before"`
	ParamsAfter  int64          `json:"params_after"`
}

// SelectRanks truncates every module of the LoRA adapter in dir to the smallest rank whose
// singular values of ΔW = s·B·A hold the share energy (in (0, 1]) of Σσ², and writes the result to
// out as a PEFT adapter: per-module ranks in rank_pattern and alphas in alpha_pattern (each keyed
// by the module's whole path, which PEFT matches first), A' = diag(√σ)·Vᵀ and B' = U·diag(√σ) with
// scale 1, so that ΔW is kept up to the cut. It needs no model: shapes come from the file.
func SelectRanks(dir string, energy float64, out string) (RankReport, error) {
	if !(energy > 0 && energy <= 1) {
		return RankReport{}, fmt.Errorf("rank: energy %v is not in (0, 1]", energy)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return RankReport{}, err
	}
	switch {
	case cfg.PeftType != TypeLoRA:
		return RankReport{}, fmt.Errorf("rank: %s is %s, not a LoRA adapter", dir, cfg.PeftType)
	case cfg.UseDoRA:
		return RankReport{}, fmt.Errorf("rank: %s is DoRA: truncating ΔW would change its weight norms", dir)
	}
	if err := cfg.validate(); err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	alphas, err := compilePatterns("alpha_pattern", cfg.AlphaPattern, cfg.alphaOrder)
	if err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	path := filepath.Join(dir, WeightsFile)
	f, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	defer f.Close()
	byKey := map[string]checkpoint.Tensor{}
	var mods []string
	for _, n := range f.Names() {
		k := normalizeKey(n)
		t, _ := f.Tensor(n)
		byKey[k] = t
		if strings.HasSuffix(k, ".lora_A.weight") {
			mods = append(mods, strings.TrimSuffix(strings.TrimPrefix(k, keyPrefix), ".lora_A.weight"))
		}
	}
	sort.Strings(mods)
	if len(mods) == 0 {
		return RankReport{}, fmt.Errorf("rank: %s holds no lora_A tensor", path)
	}
	var rep RankReport
	tensors := map[string]checkpoint.Tensor{}
	cfg.RankPattern, cfg.AlphaPattern = map[string]any{}, map[string]any{}
	maxKept := 0
	for _, name := range mods {
		ka, kb := keyPrefix+name+".lora_A.weight", keyPrefix+name+".lora_B.weight"
		ta, tb := byKey[ka], byKey[kb]
		if len(ta.Shape) != 2 || len(tb.Shape) != 2 || tb.Shape[1] != ta.Shape[0] {
			return RankReport{}, fmt.Errorf("rank: %s: lora_A %v and lora_B %v do not pair", path, ta.Shape, tb.Shape)
		}
		r, in, outDim := ta.Shape[0], ta.Shape[1], tb.Shape[0]
		A, err := checkpoint.ToFloat32(ta)
		if err != nil {
			return RankReport{}, fmt.Errorf("rank: %s: %w", ka, err)
		}
		B, err := checkpoint.ToFloat32(tb)
		if err != nil {
			return RankReport{}, fmt.Errorf("rank: %s: %w", kb, err)
		}
		alpha := cfg.LoraAlpha
		if v, ok := alphas.lookup(name); ok {
			alpha = v
		}
		s := float64(cfg.scaleOf(r, alpha))
		U, sigma, V, err := lowRankSVD(B, A, outDim, in, r, s)
		if err != nil {
			return RankReport{}, fmt.Errorf("rank: %s: %w", name, err)
		}
		var total float64
		for _, x := range sigma {
			total += x * x
		}
		kept, acc := len(sigma), 0.0
		for k, x := range sigma {
			acc += x * x
			if total == 0 || acc >= energy*total*(1-1e-12) {
				kept = k + 1
				break
			}
		}
		share := 1.0
		if total > 0 {
			share = 0
			for _, x := range sigma[:kept] {
				share += x * x
			}
			share /= total
		}
		rep.Modules = append(rep.Modules, RankedModule{Module: name, Rank: r, Kept: kept, Energy: share, Sigma: sigma})
		rep.ParamsBefore += int64(r * (in + outDim))
		rep.ParamsAfter += int64(kept * (in + outDim))
		na, nb := make([]float32, kept*in), make([]float32, outDim*kept)
		for k := 0; k < kept; k++ {
			f := math.Sqrt(sigma[k])
			for i := 0; i < in; i++ {
				na[k*in+i] = float32(f * V.At(i, k))
			}
			for o := 0; o < outDim; o++ {
				nb[o*kept+k] = float32(U.At(o, k) * f)
			}
		}
		tensors[ka] = checkpoint.FromFloat32(na, []int{kept, in})
		tensors[kb] = checkpoint.FromFloat32(nb, []int{outDim, kept})
		// Scale 1: alpha = kept, or √kept with rsLoRA.
		a := float64(kept)
		if cfg.UseRSLoRA {
			a = math.Sqrt(a)
		}
		cfg.RankPattern[name], cfg.AlphaPattern[name] = float64(kept), a
		maxKept = max(maxKept, kept)
	}
	// r and lora_alpha are the defaults no module uses any more; keep them consistent.
	cfg.R, cfg.LoraAlpha = maxKept, float64(maxKept)
	if cfg.UseRSLoRA {
		cfg.LoraAlpha = math.Sqrt(float64(maxKept))
	}
	cfg.InitLoraWeights = true
	cfg.InferenceMode = true
	raw, err := cfg.MarshalJSON()
	if err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	if err := checkpoint.WriteSafetensors(filepath.Join(out, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(out, ConfigFile), raw, 0o644); err != nil {
		return RankReport{}, fmt.Errorf("rank: %w", err)
	}
	return rep, nil
}

// lowRankSVD returns the thin SVD U·diag(σ)·Vᵀ of s·B·A (B: [out, r], A: [r, in]) through QR
// factors of B and Aᵀ and the SVD of an r×r matrix: O((out+in)·r²), not O(out·in·min).
func lowRankSVD(B, A []float32, out, in, r int, s float64) (U *mat.Dense, sigma []float64, V *mat.Dense, err error) {
	if r > out || r > in {
		return nil, nil, nil, fmt.Errorf("rank %d is above the weight's %d×%d", r, out, in)
	}
	bd := mat.NewDense(out, r, nil)
	for o := 0; o < out; o++ {
		for k := 0; k < r; k++ {
			bd.Set(o, k, float64(B[o*r+k]))
		}
	}
	at := mat.NewDense(in, r, nil)
	for k := 0; k < r; k++ {
		for i := 0; i < in; i++ {
			at.Set(i, k, float64(A[k*in+i]))
		}
	}
	var qb, qa mat.QR
	qb.Factorize(bd)
	qa.Factorize(at)
	var QB, RB, QA, RA mat.Dense
	qb.QTo(&QB)
	qb.RTo(&RB)
	qa.QTo(&QA)
	qa.RTo(&RA)
	// s·B·A = QB·(s·RB·RAᵀ)·QAᵀ with the thin factors.
	rb := RB.Slice(0, r, 0, r)
	ra := RA.Slice(0, r, 0, r)
	var M mat.Dense
	M.Mul(rb, ra.T())
	M.Scale(s, &M)
	var svd mat.SVD
	if !svd.Factorize(&M, mat.SVDFull) {
		return nil, nil, nil, fmt.Errorf("the SVD did not converge")
	}
	sigma = svd.Values(nil)
	var u, v mat.Dense
	svd.UTo(&u)
	svd.VTo(&v)
	U, V = mat.NewDense(out, r, nil), mat.NewDense(in, r, nil)
	U.Mul(QB.Slice(0, out, 0, r), &u)
	V.Mul(QA.Slice(0, in, 0, r), &v)
	return U, sigma, V, nil
}
