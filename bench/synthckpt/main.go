// Command synthckpt writes a synthetic Hugging Face checkpoint with a real model's shapes (Llama
// 3.2 1B or Llama 3.1 8B) in f16 or bf16, one tensor at a time, so that a checkpoint larger than
// memory can be written: the peak-memory measurements of streamed loading use it.
//
//	go run ./bench/synthckpt --shape 1b --dtype f16 --out /tmp/llama-1b-f16
//	go run ./bench/synthckpt --shape 8b --dtype bf16 --out /tmp/llama-8b-bf16   # 16 GB
//
// Weights are drawn from N(0, 0.02²) (norms from U[0.75, 1.25]), as model/synth draws them;
// shards hold at most 4 GiB, indexed by model.safetensors.index.json as transformers writes it.
// On success the last line is a JSON object: the folder, its parameters and bytes.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"

	"github.com/x448/float16"

	"github.com/lathe-ml/lathe/internal/half"
	"github.com/lathe-ml/lathe/model/checkpoint"
	"github.com/lathe-ml/lathe/model/synth"
)

// shapes are the real models' sizes (vocabulary included), from their config.json.
var shapes = map[string]synth.Preset{
	"1b": {Name: "llama-3.2-1b-shaped", Vocab: 128256, Hidden: 2048, Intermediate: 8192, Layers: 16, Heads: 32, KVHeads: 8, MaxPos: 8192, Tied: true},
	"8b": {Name: "llama-3.1-8b-shaped", Vocab: 128256, Hidden: 4096, Intermediate: 14336, Layers: 32, Heads: 32, KVHeads: 8, MaxPos: 8192},
}

type tensor struct {
	name  string
	shape []int
	norm  bool // a norm weight: U[0.75, 1.25]
}

func (t tensor) numel() int64 {
	n := int64(1)
	for _, d := range t.shape {
		n *= int64(d)
	}
	return n
}

func main() {
	out := flag.String("out", "", "folder to write")
	shape := flag.String("shape", "1b", "1b (Llama 3.2 1B) or 8b (Llama 3.1 8B)")
	dtype := flag.String("dtype", "f16", "f16 or bf16")
	layers := flag.Int("layers", 0, "decoder layers (default: the model's)")
	flag.Parse()
	if err := run(*out, *shape, *dtype, *layers); err != nil {
		fmt.Fprintln(os.Stderr, "synthckpt:", err)
		os.Exit(1)
	}
}

func run(out, shape, dtype string, layers int) error {
	p, ok := shapes[shape]
	if !ok || out == "" || (dtype != "f16" && dtype != "bf16") {
		return fmt.Errorf("need --out, --shape 1b|8b and --dtype f16|bf16")
	}
	if layers > 0 {
		p.Layers = layers
	}
	st := map[string]string{"f16": "F16", "bf16": "BF16"}[dtype]
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	hd := p.Hidden / p.Heads
	ts := []tensor{{name: "model.embed_tokens.weight", shape: []int{p.Vocab, p.Hidden}}}
	for l := 0; l < p.Layers; l++ {
		pre := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			tensor{name: pre + "input_layernorm.weight", shape: []int{p.Hidden}, norm: true},
			tensor{name: pre + "self_attn.q_proj.weight", shape: []int{p.Heads * hd, p.Hidden}},
			tensor{name: pre + "self_attn.k_proj.weight", shape: []int{p.KVHeads * hd, p.Hidden}},
			tensor{name: pre + "self_attn.v_proj.weight", shape: []int{p.KVHeads * hd, p.Hidden}},
			tensor{name: pre + "self_attn.o_proj.weight", shape: []int{p.Hidden, p.Heads * hd}},
			tensor{name: pre + "post_attention_layernorm.weight", shape: []int{p.Hidden}, norm: true},
			tensor{name: pre + "mlp.gate_proj.weight", shape: []int{p.Intermediate, p.Hidden}},
			tensor{name: pre + "mlp.up_proj.weight", shape: []int{p.Intermediate, p.Hidden}},
			tensor{name: pre + "mlp.down_proj.weight", shape: []int{p.Hidden, p.Intermediate}})
	}
	ts = append(ts, tensor{name: "model.norm.weight", shape: []int{p.Hidden}, norm: true})
	if !p.Tied {
		ts = append(ts, tensor{name: "lm_head.weight", shape: []int{p.Vocab, p.Hidden}})
	}
	// Cut into shards of at most 4 GiB, in order.
	const shardMax = 4 << 30
	var shards [][]tensor
	var size, total, params int64
	for _, t := range ts {
		b := 2 * t.numel()
		if len(shards) == 0 || size+b > shardMax {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], t)
		size += b
		total += b
		params += t.numel()
	}
	weightMap := map[string]string{}
	for i, sh := range shards {
		name := checkpoint.WeightsFile
		if len(shards) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		for _, t := range sh {
			weightMap[t.name] = name
		}
		if err := writeShard(filepath.Join(out, name), sh, st, uint64(i+1)); err != nil {
			return err
		}
	}
	if len(shards) > 1 {
		idx, err := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, checkpoint.IndexFile), idx, 0o644); err != nil {
			return err
		}
	}
	if err := checkpoint.WriteConfig(filepath.Join(out, checkpoint.ConfigFile), synth.Config(p, p.Vocab, st)); err != nil {
		return err
	}
	if err := synth.WriteTokenizer(out, p.Vocab); err != nil {
		return err
	}
	res, _ := json.Marshal(map[string]any{"dir": out, "shape": p.Name, "dtype": dtype, "params": params, "bytes": total, "shards": len(shards)})
	fmt.Println(string(res))
	return nil
}

// writeShard writes one safetensors file: the header, then each tensor's values drawn and
// converted a chunk at a time on two goroutines.
func writeShard(path string, ts []tensor, dtype string, seed uint64) error {
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var off int64
	for _, t := range ts {
		b := 2 * t.numel()
		header[t.name] = map[string]any{"dtype": dtype, "shape": t.shape, "data_offsets": []int64{off, off + b}}
		off += b
	}
	h, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 8<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(h)))
	w.Write(n[:])
	w.Write(h)
	const chunk = 1 << 22
	buf := make([]byte, 2*chunk)
	for ti, t := range ts {
		for c := int64(0); c < t.numel(); c += chunk {
			m := min(chunk, t.numel()-c)
			var wg sync.WaitGroup
			for part := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(seed, uint64(ti)<<40|uint64(c)<<1|uint64(part)))
					for i := int64(part) * m / 2; i < int64(part+1)*m/2; i++ {
						v := float32(r.NormFloat64() * 0.02)
						if t.norm {
							v = float32(0.75 + 0.5*r.Float64())
						}
						var b uint16
						if dtype == "BF16" {
							b = half.BF16(v)
						} else {
							b = float16.Fromfloat32(v).Bits()
						}
						binary.LittleEndian.PutUint16(buf[2*i:], b)
					}
				}()
			}
			wg.Wait()
			if _, err := w.Write(buf[:2*m]); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
