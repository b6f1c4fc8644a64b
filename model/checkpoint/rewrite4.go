package checkpoint

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lathe-ml/lathe/quant"
)

// Rewrite4Report says what Rewrite4bitFolder wrote.
type Rewrite4Report struct {
	Out string `json:"out"`
	// Changed counts the tensors edit changed; Dequantized the 4-bit weights expanded (changed or
	// not); Kept the tensors written as they were.
	Changed     int `json:"changed_tensors"`
	Dequantized int `json:"dequantized_tensors"`
	Kept        int `json:"kept_tensors"`
	// DType is the dtype of the expanded weights ("BF16"), or "nf4"/"fp4" when re-quantized.
	DType       string   `json:"dtype"`
	BytesIn     int64    `json:"bytes_in"`
	BytesOut    int64    `json:"bytes_out"`
	CopiedFiles []string `json:"copied_files"`
}

// Rewrite4bitFolder writes to outDir the bitsandbytes 4-bit model in inDir with each weight that
// changes names replaced by edit's result (given its float32 values, dequantized when 4-bit,
// edited in place). With requantize nil, every 4-bit weight is written as BF16 (Unsloth's
// save_pretrained_merged default: dequantize(W), plus edit's ΔW) and config.json loses its
// quantization_config; with requantize set, the 4-bit weights are quantized again to that type
// (the source's blocksize and double quantization) and the quantization_config says so.
// Floating tensors that are not 4-bit keep their dtype. Tensors stream one at a time into the
// single model.safetensors, except that re-quantized weights are held in 4 bits until written.
func Rewrite4bitFolder(inDir, outDir string, requantize *quant.Type, changes func(name string) bool, edit func(name string, v []float32) error) (Rewrite4Report, error) {
	var rep Rewrite4Report
	if err := checkOutDir(inDir, outDir); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	ck, err := Open(inDir)
	if err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	defer ck.Close()
	quantized, consumed, err := ck.Bnb4bit()
	if err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	if len(quantized) == 0 {
		return rep, fmt.Errorf("rewrite: %s holds no bitsandbytes 4-bit weights", inDir)
	}
	rep.DType = "BF16"
	if requantize != nil {
		rep.DType = requantize.String()
	}
	out := map[string]lazyTensor{}
	for _, name := range ck.Names() {
		t, _ := ck.Tensor(name)
		q, is4 := quantized[name]
		switch {
		case is4:
			rep.Dequantized++
			change := changes(name)
			if change {
				rep.Changed++
			}
			values := func() ([]float32, error) {
				v, err := q.Dequantize()
				if err != nil {
					return nil, fmt.Errorf("dequantize %s: %w", name, err)
				}
				if change {
					if err := edit(name, v); err != nil {
						return nil, err
					}
				}
				return v, nil
			}
			if requantize == nil {
				out[name] = lazyTensor{Tensor: Tensor{DType: "BF16", Shape: q.Shape}, produce: func() ([]byte, error) {
					v, err := values()
					if err != nil {
						return nil, err
					}
					nt, err := FromFloat32As(v, q.Shape, "BF16")
					return nt.Data, err
				}}
				continue
			}
			// The companions' sizes (quant_state's JSON) are only known once quantized: this
			// weight is merged and quantized now, and only its 4 bits are kept.
			v, err := values()
			if err != nil {
				return rep, fmt.Errorf("rewrite: %w", err)
			}
			nq, err := quant.Quantize(v, q.Shape, *requantize, q.Blocksize, q.DoubleQuant())
			if err != nil {
				return rep, fmt.Errorf("rewrite: quantize %s: %w", name, err)
			}
			nq.DType = q.DType
			raw, err := nq.ToBnb(name)
			if err != nil {
				return rep, fmt.Errorf("rewrite: quantize %s: %w", name, err)
			}
			for k, rt := range raw {
				out[k] = lazyTensor{Tensor: Tensor(rt)}
			}
		case consumed[name]:
		default:
			for _, s := range quantizedSuffixes {
				if strings.HasSuffix(name, s) {
					return rep, fmt.Errorf("rewrite: %s: tensor %s has no quant_state to decode it", inDir, name)
				}
			}
			if !IsFloat(t.DType) || !changes(name) {
				out[name] = lazyTensor{Tensor: t}
				rep.Kept++
				continue
			}
			rep.Changed++
			out[name] = lazyTensor{Tensor: Tensor{DType: t.DType, Shape: t.Shape}, produce: func() ([]byte, error) {
				v, err := ToFloat32(t)
				if err == nil {
					err = edit(name, v)
				}
				if err != nil {
					return nil, fmt.Errorf("rewrite %s: %w", name, err)
				}
				nt, err := FromFloat32As(v, t.Shape, t.DType)
				return nt.Data, err
			}}
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	weights := filepath.Join(outDir, WeightsFile)
	if err := writeSafetensors(weights, out, map[string]string{"format": "pt"}); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	cfg := cloneConfig(ck.Config)
	if requantize == nil {
		delete(cfg, "quantization_config")
		cfg["torch_dtype"] = quant.DTypeBFloat16
		if _, ok := cfg["dtype"]; ok {
			cfg["dtype"] = quant.DTypeBFloat16
		}
	} else if qc, ok := cfg["quantization_config"].(map[string]any); ok {
		nqc := cloneConfig(qc)
		nqc["bnb_4bit_quant_type"] = requantize.String()
		cfg["quantization_config"] = nqc
	}
	if err := WriteConfig(filepath.Join(outDir, ConfigFile), cfg); err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	copied, err := ck.copyExtras(outDir)
	if err != nil {
		return rep, fmt.Errorf("rewrite: %w", err)
	}
	rep.Out, rep.BytesIn, rep.BytesOut, rep.CopiedFiles = outDir, ck.WeightBytes(), fileSize(weights), nonNil(copied)
	return rep, nil
}
