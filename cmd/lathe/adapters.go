package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/engine/backends"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/serve"
)

// openModel opens the device, loads the model in dir onto it (head: the output projection of
// generation, model.LoadOptions.Head) and its tokenizer; done releases both.
func openModel(device, dir, quantize, head, compute string) (m *model.Model, tok *tokenizer.Tokenizer, done func(), err error) {
	b, err := backends.Open(device)
	if err != nil {
		return nil, nil, nil, err
	}
	if m, err = model.Load(dir, b, model.LoadOptions{Quantize: quantize, Head: head, Compute: compute}); err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	if tok, err = tokenizer.Load(dir); err != nil {
		m.Release()
		b.Close()
		return nil, nil, nil, err
	}
	return m, tok, func() { m.Release(); b.Close() }, nil
}

// headUsage is the help of generate's and serve's --head.
const headUsage = "the output layer's copy decoding reads: auto (bf16 beside a 4-bit base whose output matrix is f32; else as loaded), base (as loaded), bf16, f16, nf4 or fp4 (llama.cpp Q4_0's bytes; less exact)"

// computeUsage is the help of generate's and serve's --compute.
const computeUsage = "precision of the 4-bit layers' products: f32 (exact), bf16 (x and the codes rounded to bfloat16, as bitsandbytes' bnb_4bit_compute_dtype=bfloat16; faster decoding and prompts on a CPU with AVX512_BF16) or i8 (as bf16, and decoding with 8-bit integer products as llama.cpp does: x in signed bytes a block of 64, the codes as code·127; on a CPU with AVX512_VNNI)"

// adapterLoader loads PEFT adapter folders for m.
func adapterLoader(m *model.Model) serve.AdapterLoader {
	return func(dir string) (model.Adapter, error) {
		a, err := peft.Load(dir, m.Cfg, m.Backend)
		if err != nil {
			return nil, err
		}
		return a, nil
	}
}

// servedAdapterLoader is adapterLoader for the server, whose steps mix adapters: a DoRA adapter,
// which cannot join such a step, is refused with the way to serve it.
func servedAdapterLoader(m *model.Model) serve.AdapterLoader {
	load := adapterLoader(m)
	return func(dir string) (model.Adapter, error) {
		a, err := load(dir)
		if err != nil {
			return nil, err
		}
		if pa, ok := a.(*peft.Adapter); ok && pa.Config.UseDoRA {
			pa.Release()
			return nil, fmt.Errorf("the adapter is DoRA (use_dora): the server mixes adapters in one step, which DoRA's per-row magnitudes do not allow; serve it merged (lathe serve --merge DIR)")
		}
		return a, nil
	}
}

// combineAdapters is peft.Combine for the registry: the parts must be PEFT LoRA adapters.
func combineAdapters(weights []float64, parts []model.Adapter) (model.Adapter, error) {
	return peft.CombineAdapters(weights, parts)
}
