package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/lathe-ml/lathe/quant"
)

// QuantizeOptions chooses how QuantizeFolder quantizes.
type QuantizeOptions struct {
	// Type is the 4-bit type; the zero value is NF4.
	Type quant.Type
	// Blocksize is the number of elements per absmax; 0 means 64.
	Blocksize int
	// DoubleQuant also quantizes the absmax values (bnb_4bit_use_double_quant).
	DoubleQuant bool
	// ComputeDType is written as bnb_4bit_compute_dtype ("float32", "bfloat16" or "float16");
	// empty means the model's torch_dtype, or float32 when that is absent or not one of these.
	ComputeDType string
}

// QuantizeReport says what QuantizeFolder did.
type QuantizeReport struct {
	// Out is the output folder.
	Out string `json:"out"`
	// QuantType is "nf4" or "fp4".
	QuantType string `json:"quant_type"`
	// Blocksize is the number of elements per absmax.
	Blocksize int `json:"blocksize"`
	// DoubleQuant reports whether the absmax values were quantized too.
	DoubleQuant bool `json:"double_quant"`
	// ComputeDType is the bnb_4bit_compute_dtype written to config.json.
	ComputeDType string `json:"compute_dtype"`
	// QuantizedTensors counts the weights quantized to 4 bits.
	QuantizedTensors int `json:"quantized_tensors"`
	// KeptTensors counts the tensors written unchanged.
	KeptTensors int `json:"kept_tensors"`
	// QuantizedParams is the number of elements of the quantized weights.
	QuantizedParams int64 `json:"quantized_params"`
	// KeptParams is the number of elements of the unchanged tensors.
	KeptParams int64 `json:"kept_params"`
	// BytesIn is the size of the safetensors files read.
	BytesIn int64 `json:"bytes_in"`
	// BytesOut is the size of the safetensors file written.
	BytesOut int64 `json:"bytes_out"`
	// BitsPerParam is the storage of the quantized weights (codes, absmax, nested absmax and
	// offset; not the shared code tables) in bits per quantized element.
	BitsPerParam float64 `json:"bits_per_param"`
	// CopiedFiles lists the other files copied unchanged (tokenizer.json, ...).
	CopiedFiles []string `json:"copied_files"`
}

// DequantizeReport says what DequantizeFolder did.
type DequantizeReport struct {
	// Out is the output folder.
	Out string `json:"out"`
	// DequantizedTensors counts the 4-bit weights expanded to float32.
	DequantizedTensors int `json:"dequantized_tensors"`
	// OtherTensors counts the other tensors (floats converted to float32, the rest unchanged).
	OtherTensors int `json:"other_tensors"`
	// DequantizedParams is the number of elements of the dequantized weights.
	DequantizedParams int64 `json:"dequantized_params"`
	// BytesIn is the size of the safetensors files read.
	BytesIn int64 `json:"bytes_in"`
	// BytesOut is the size of the safetensors file written.
	BytesOut int64 `json:"bytes_out"`
	// CopiedFiles lists the other files copied unchanged.
	CopiedFiles []string `json:"copied_files"`
}

// ShouldQuantize reports whether transformers' load_in_4bit would quantize the tensor: the
// 2-D floating-point weight of an nn.Linear. Embeddings, norms and lm_head (which transformers
// keeps in full precision) stay as they are, as do biases and every 1-D tensor.
func ShouldQuantize(name string, t Tensor) bool {
	if !strings.HasSuffix(name, ".weight") || len(t.Shape) != 2 || !IsFloat(t.DType) {
		return false
	}
	for _, skip := range []string{"embed", "norm", "lm_head"} {
		if strings.Contains(name, skip) {
			return false
		}
	}
	return true
}

// torchDType is the torch name of a safetensors float dtype, as quant_state's "dtype" spells it.
var torchDType = map[string]string{"F32": quant.DTypeFloat32, "F16": quant.DTypeFloat16, "BF16": quant.DTypeBFloat16}

// quantizedSuffixes mark tensors that only a quantized checkpoint has.
var quantizedSuffixes = []string{
	quant.SuffixAbsmax, quant.SuffixQuantMap, quant.SuffixNestedAbsmax, quant.SuffixNestedQuantMap, ".SCB",
}

// checkOutDir refuses to write over the input or into a folder holding a sharded checkpoint,
// whose index would shadow the single file written.
func checkOutDir(inDir, outDir string) error {
	ai, err1 := filepath.Abs(inDir)
	ao, err2 := filepath.Abs(outDir)
	if err1 == nil && err2 == nil && ai == ao {
		return fmt.Errorf("output folder %s is the input folder", outDir)
	}
	if si, err := os.Stat(inDir); err == nil {
		if so, err := os.Stat(outDir); err == nil && os.SameFile(si, so) {
			return fmt.Errorf("output folder %s is the input folder", outDir)
		}
	}
	if _, err := os.Stat(filepath.Join(outDir, IndexFile)); err == nil {
		return fmt.Errorf("%s: output folder holds a sharded checkpoint; choose an empty folder", filepath.Join(outDir, IndexFile))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// QuantizeFolder writes to outDir the model in inDir with its linear weights quantized to 4 bits
// in bitsandbytes' layout, as transformers saves a model loaded with load_in_4bit: a single
// model.safetensors, config.json with a quantization_config, and the folder's other files.
// Tensors that are not quantized keep their dtype and bytes.
func QuantizeFolder(inDir, outDir string, opts QuantizeOptions) (QuantizeReport, error) {
	var rep QuantizeReport
	if opts.Blocksize == 0 {
		opts.Blocksize = quant.DefaultBlocksize
	}
	if opts.Type != quant.NF4 && opts.Type != quant.FP4 {
		return rep, fmt.Errorf("quantize: unknown type %v", opts.Type)
	}
	if !quant.ValidBlocksize(opts.Blocksize) {
		return rep, fmt.Errorf("quantize: invalid blocksize %d: want a power of two from %d to %d",
			opts.Blocksize, quant.MinBlocksize, quant.MaxBlocksize)
	}
	if err := checkOutDir(inDir, outDir); err != nil {
		return rep, fmt.Errorf("quantize: %w", err)
	}
	ck, err := Open(inDir)
	if err != nil {
		return rep, fmt.Errorf("quantize: %w", err)
	}
	defer ck.Close()

	if qc, ok := ck.Config["quantization_config"]; ok && qc != nil {
		method := ""
		if m, ok := qc.(map[string]any); ok {
			method, _ = m["quant_method"].(string)
		}
		return rep, fmt.Errorf("quantize: %s is already quantized (quantization_config, quant_method %q)",
			filepath.Join(inDir, ConfigFile), method)
	}
	for _, name := range ck.Names() {
		_, isState := quant.IsBnbQuantState(name)
		quantized := isState
		for _, s := range quantizedSuffixes {
			quantized = quantized || strings.HasSuffix(name, s)
		}
		if quantized {
			return rep, fmt.Errorf("quantize: %s is already quantized (it has tensor %s)", inDir, name)
		}
	}

	compute := opts.ComputeDType
	if compute == "" {
		compute = quant.DTypeFloat32
		for _, key := range []string{"torch_dtype", "dtype"} {
			if s, ok := ck.Config[key].(string); ok && (s == quant.DTypeBFloat16 || s == quant.DTypeFloat16 || s == quant.DTypeFloat32) {
				compute = s
				break
			}
		}
	}
	if compute != quant.DTypeFloat32 && compute != quant.DTypeBFloat16 && compute != quant.DTypeFloat16 {
		return rep, fmt.Errorf("quantize: compute dtype %q unsupported (want float32, bfloat16 or float16)", compute)
	}

	// Quantize the linear weights in parallel; the rest is written straight from the mapping.
	var toQuant []string
	out := map[string]Tensor{}
	for _, name := range ck.Names() {
		t, _ := ck.Tensor(name)
		if ShouldQuantize(name, t) {
			toQuant = append(toQuant, name)
			continue
		}
		out[name] = t
		rep.KeptTensors++
		rep.KeptParams += t.Numel()
	}
	results := make([]*quant.Tensor4, len(toQuant))
	errs := make([]error, len(toQuant))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, name := range toQuant {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			t, _ := ck.Tensor(name)
			v, err := ToFloat32(t)
			if err == nil {
				results[i], err = quant.Quantize(v, t.Shape, opts.Type, opts.Blocksize, opts.DoubleQuant)
			}
			if err != nil {
				errs[i] = fmt.Errorf("quantize %s: %w", name, err)
				return
			}
			results[i].DType = torchDType[t.DType]
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	var storage int64
	for i, name := range toQuant {
		q := results[i]
		raw, err := q.ToBnb(name)
		if err != nil {
			return rep, fmt.Errorf("quantize %s: %w", name, err)
		}
		for k, rt := range raw {
			if _, dup := out[k]; dup {
				return rep, fmt.Errorf("quantize %s: tensor %s already exists", name, k)
			}
			out[k] = Tensor(rt)
		}
		rep.QuantizedTensors++
		rep.QuantizedParams += int64(q.Numel())
		storage += q.StorageBytes()
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return rep, fmt.Errorf("quantize: %w", err)
	}
	weights := filepath.Join(outDir, WeightsFile)
	if err := WriteSafetensors(weights, out, map[string]string{"format": "pt"}); err != nil {
		return rep, fmt.Errorf("quantize: %w", err)
	}
	cfg := cloneConfig(ck.Config)
	cfg["quantization_config"] = map[string]any{
		"_load_in_4bit":                    true,
		"_load_in_8bit":                    false,
		"bnb_4bit_compute_dtype":           compute,
		"bnb_4bit_quant_storage":           "uint8",
		"bnb_4bit_quant_type":              opts.Type.String(),
		"bnb_4bit_use_double_quant":        opts.DoubleQuant,
		"llm_int8_enable_fp32_cpu_offload": false,
		"llm_int8_has_fp16_weight":         false,
		"llm_int8_skip_modules":            nil,
		"llm_int8_threshold":               json.Number("6.0"),
		"load_in_4bit":                     true,
		"load_in_8bit":                     false,
		"quant_method":                     "bitsandbytes",
	}
	if err := WriteConfig(filepath.Join(outDir, ConfigFile), cfg); err != nil {
		return rep, fmt.Errorf("quantize: %w", err)
	}
	copied, err := ck.copyExtras(outDir)
	if err != nil {
		return rep, fmt.Errorf("quantize: %w", err)
	}

	rep.Out = outDir
	rep.QuantType = opts.Type.String()
	rep.Blocksize = opts.Blocksize
	rep.DoubleQuant = opts.DoubleQuant
	rep.ComputeDType = compute
	rep.BytesIn = ck.WeightBytes()
	rep.BytesOut = fileSize(weights)
	if rep.QuantizedParams > 0 {
		rep.BitsPerParam = 8 * float64(storage) / float64(rep.QuantizedParams)
	}
	rep.CopiedFiles = nonNil(copied)
	return rep, nil
}

// DequantizeFolder writes to outDir the bitsandbytes 4-bit model in inDir with every floating
// tensor as F32: the 4-bit weights dequantized to their original shape, the others converted.
// Tensors of other dtypes are kept as they are. config.json loses its quantization_config and
// gets torch_dtype float32.
func DequantizeFolder(inDir, outDir string) (DequantizeReport, error) {
	var rep DequantizeReport
	if err := checkOutDir(inDir, outDir); err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	ck, err := Open(inDir)
	if err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	defer ck.Close()

	quantized, consumed, err := ck.Bnb4bit()
	if err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	if len(quantized) == 0 {
		return rep, fmt.Errorf("dequantize: %s holds no bitsandbytes 4-bit weights (no *.quant_state.bitsandbytes__nf4/fp4 tensors)", inDir)
	}

	out := map[string]lazyTensor{}
	for _, name := range ck.Names() {
		if consumed[name] {
			if q, ok := quantized[name]; ok {
				out[name] = lazyTensor{
					Tensor: Tensor{DType: "F32", Shape: q.Shape},
					produce: func() ([]byte, error) {
						v, err := q.Dequantize()
						if err != nil {
							return nil, fmt.Errorf("dequantize %s: %w", name, err)
						}
						return f32Bytes(v), nil
					},
				}
				rep.DequantizedTensors++
				rep.DequantizedParams += int64(q.Numel())
			}
			continue
		}
		for _, s := range quantizedSuffixes {
			if strings.HasSuffix(name, s) {
				return rep, fmt.Errorf("dequantize: %s: tensor %s has no quant_state to decode it", inDir, name)
			}
		}
		t, _ := ck.Tensor(name)
		rep.OtherTensors++
		if !IsFloat(t.DType) || t.DType == "F32" {
			out[name] = lazyTensor{Tensor: t}
			continue
		}
		out[name] = lazyTensor{
			Tensor: Tensor{DType: "F32", Shape: t.Shape},
			produce: func() ([]byte, error) {
				v, err := ToFloat32(t)
				if err != nil {
					return nil, fmt.Errorf("convert %s: %w", name, err)
				}
				return f32Bytes(v), nil
			},
		}
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	weights := filepath.Join(outDir, WeightsFile)
	if err := writeSafetensors(weights, out, map[string]string{"format": "pt"}); err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	cfg := cloneConfig(ck.Config)
	delete(cfg, "quantization_config")
	cfg["torch_dtype"] = quant.DTypeFloat32
	if _, ok := cfg["dtype"]; ok {
		cfg["dtype"] = quant.DTypeFloat32 // newer transformers' name for torch_dtype
	}
	if err := WriteConfig(filepath.Join(outDir, ConfigFile), cfg); err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	copied, err := ck.copyExtras(outDir)
	if err != nil {
		return rep, fmt.Errorf("dequantize: %w", err)
	}
	rep.Out = outDir
	rep.BytesIn = ck.WeightBytes()
	rep.BytesOut = fileSize(weights)
	rep.CopiedFiles = nonNil(copied)
	return rep, nil
}

// Bnb4bit finds the checkpoint's bitsandbytes 4-bit weights: each quant_state tensor names one,
// decoded with its companions (absmax, quant_map, nested tables). consumed holds every tensor
// name that belongs to a 4-bit weight, the packed weight included.
func (c *Checkpoint) Bnb4bit() (quantized map[string]*quant.Tensor4, consumed map[string]bool, err error) {
	consumed = map[string]bool{}
	quantized = map[string]*quant.Tensor4{}
	for _, name := range c.Names() {
		w, ok := quant.IsBnbQuantState(name)
		if !ok {
			continue
		}
		group := map[string]quant.RawTensor{}
		keys := append(quant.BnbKeys(w, quant.NF4, true), w+quant.SuffixQuantState+quant.FP4.String())
		for _, k := range keys {
			if t, ok := c.Tensor(k); ok {
				group[k] = quant.RawTensor(t)
			}
		}
		q, err := quant.FromBnb(w, group)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.Dir, err)
		}
		quantized[w] = q
		for _, k := range quant.BnbKeys(w, q.Type, q.DoubleQuant()) {
			consumed[k] = true
		}
	}
	return quantized, consumed, nil
}

// cloneConfig copies the top level of a config so that edits leave the checkpoint's intact.
func cloneConfig(cfg map[string]any) map[string]any {
	out := make(map[string]any, len(cfg)+1)
	for k, v := range cfg {
		out[k] = v
	}
	return out
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
