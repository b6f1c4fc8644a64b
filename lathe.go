// Package lathe is the Go API for apps that embed fine-tuning: open a model on the best device,
// train a LoRA, QLoRA or IA3 adapter with progress events, generate with streaming, and load,
// unload and combine adapters, in a few lines:
//
//	m, err := lathe.Open("models/tiny", lathe.Options{Device: "auto", Quantize: "nf4"})
//	if err != nil { ... }
//	defer m.Close()
//	cfg := lathe.DefaultTrainConfig()
//	cfg.Data, cfg.Out, cfg.Method = "notes.jsonl", "my-adapter", "qlora"
//	res, err := m.Train(ctx, cfg, func(p lathe.Progress) { fmt.Println(p.Step, p.Loss, p.ETA) })
//	err = m.LoadAdapter("mine", res.Adapter)
//	for piece, err := range m.Stream(ctx, lathe.Request{Prompt: "Hello", Adapter: "mine"}) { ... }
//
// It wraps the packages that do the work (model, peft, train, serve) and adds no logic of its
// own: the command line, cmd/lathe, is built on it.
package lathe

import (
	"cmp"
	"errors"
	"sync"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/engine/backends"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/model/tokenizer"
	"github.com/lathe-ml/lathe/peft"
	"github.com/lathe-ml/lathe/serve"
)

// Options choose the device and how the weights are stored on it.
type Options struct {
	// Device is "auto" (the default: a discrete GPU, then an integrated one, then the CPU), "cpu",
	// "webgpu", "webgpu:N", "vulkan" or "vulkan:N".
	Device string
	// Quantize stores the linear layers' weights in 4 bits, "nf4" or "fp4" ("": as the checkpoint
	// has them). Training on a 4-bit model is QLoRA.
	Quantize string
	// DoubleQuant quantizes the 4-bit block scales too, as QLoRA does.
	DoubleQuant bool
	// Blocksize is the 4-bit block size (default 64).
	Blocksize int
	// Head is the output projection generation reads (model.LoadOptions.Head); "" is
	// model.HeadAuto. Training and evaluation use the loaded one.
	Head string
	// Compute is the precision of the 4-bit layers' products (model.LoadOptions.Compute): "" or
	// "f32" exact, "bf16" as bitsandbytes' bnb_4bit_compute_dtype=bfloat16 (faster decoding on
	// CPUs with AVX512_BF16).
	Compute string
	// Slots is the most generations decoded together (default 4); more wait for a slot.
	Slots int
	// Context is the most tokens, prompt and completion, a generation holds (default: the
	// model's context, at most 2048). The KV cache takes Slots × Context positions.
	Context int
}

// Device is one device found by Devices, or the error its backend gave while looking.
type Device = backends.Device

// Devices lists every device of every backend, best first (the order Device "auto" prefers).
func Devices() []Device { return backends.List() }

// Model is a model open on a device, with its tokenizer and the adapters loaded for generation.
// Its methods are safe for concurrent use; Close frees the device.
type Model struct {
	opts    Options
	backend engine.Backend
	m       *model.Model
	tok     *tokenizer.Tokenizer
	tokErr  error
	gen     *serve.Generator
	reg     *serve.Registry

	mu       sync.Mutex
	closed   bool
	trainers map[*Trainer]bool
}

// ErrClosed is the error of a call on a closed Model.
var ErrClosed = errors.New("lathe: the model is closed")

// Open opens the device o.Device names and loads the Hugging Face model folder dir onto it
// (config.json, safetensors, and tokenizer.json for generation; a folder without a tokenizer can
// still train on pre-tokenized data).
func Open(dir string, o Options) (*Model, error) {
	if o.Device == "" {
		o.Device = "auto"
	}
	b, err := backends.Open(o.Device)
	if err != nil {
		return nil, err
	}
	m, err := model.Load(dir, b, model.LoadOptions{Quantize: o.Quantize, DoubleQuant: o.DoubleQuant, Blocksize: o.Blocksize, Head: cmp.Or(o.Head, model.HeadAuto), Compute: o.Compute})
	if err != nil {
		b.Close()
		return nil, err
	}
	lm := &Model{opts: o, backend: b, m: m, trainers: map[*Trainer]bool{}}
	if lm.tok, lm.tokErr = tokenizer.Load(dir); lm.tokErr == nil {
		lm.gen = &serve.Generator{Model: m, Tok: lm.tok, Slots: o.Slots, Context: o.Context}
	}
	lm.reg = serve.NewRegistry(func(dir string) (model.Adapter, error) { return peft.Load(dir, m.Cfg, b) })
	lm.reg.Combine = peft.CombineAdapters
	lm.reg.OnRetire(lm.retire)
	return lm, nil
}

// retire frees an adapter that left the registry, once no generation uses it.
func (lm *Model) retire(a model.Adapter, release bool) {
	if lm.gen != nil {
		lm.gen.Retire(a, release)
		return
	}
	if r, ok := a.(interface{ Release() }); ok && release {
		r.Release()
	}
}

// Dir is the model's folder.
func (lm *Model) Dir() string { return lm.m.Dir }

// Device names the device the model is on, as "backend:name" (cpu:..., webgpu:...).
func (lm *Model) Device() string {
	d := lm.backend.Device()
	return d.Backend + ":" + d.Name
}

// Config is the model's architecture (config.json).
func (lm *Model) Config() *model.Config { return lm.m.Cfg }

// WeightBytes is the device memory the base weights take.
func (lm *Model) WeightBytes() int64 { return lm.m.WeightBytes() }

// Internal returns the loaded model, for code that uses the lower-level packages directly
// (model, peft, train, serve). It stays the Model's: Close frees it.
func (lm *Model) Internal() *model.Model { return lm.m }

// Close stops the trainers made from the model (a running one writes a checkpoint first, as a
// cancelled run does), waits for running generations, and frees the adapters, the weights and
// the device. Later calls fail with ErrClosed; Close itself may be called again.
func (lm *Model) Close() error {
	lm.mu.Lock()
	if lm.closed {
		lm.mu.Unlock()
		return nil
	}
	lm.closed = true
	trainers := make([]*Trainer, 0, len(lm.trainers))
	for t := range lm.trainers {
		trainers = append(trainers, t)
	}
	lm.mu.Unlock()
	var errs []error
	for _, t := range trainers {
		errs = append(errs, t.Close())
	}
	for _, name := range lm.reg.Names() {
		lm.reg.Unload(name)
	}
	if lm.gen != nil {
		lm.gen.Close()
	}
	lm.m.Release()
	errs = append(errs, lm.backend.Close())
	return errors.Join(errs...)
}

// check reports ErrClosed once Close has begun.
func (lm *Model) check() error {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	if lm.closed {
		return ErrClosed
	}
	return nil
}
