// Package checkpoint reads and writes Hugging Face model folders: config.json, model.safetensors
// or a sharded model.safetensors.index.json with its shards, and the files that travel with them
// (tokenizer.json, generation_config.json, ...). Safetensors files are memory-mapped read-only;
// everything is written atomically. It also converts whole folders to and from bitsandbytes'
// 4-bit format (QuantizeFolder, DequantizeFolder).
package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lathe-ml/lathe/internal/atomicfile"
)

// File names of a Hugging Face model folder.
const (
	ConfigFile  = "config.json"
	WeightsFile = "model.safetensors"
	IndexFile   = "model.safetensors.index.json"
)

// Checkpoint is an open Hugging Face model folder. Tensors alias memory-mapped files: Close the
// checkpoint only when they are no longer used.
type Checkpoint struct {
	// Dir is the folder.
	Dir string
	// Config is config.json, decoded with numbers kept as json.Number so that every field,
	// known or not, survives a rewrite unchanged.
	Config map[string]any
	// Sharded reports whether the weights came from model.safetensors.index.json.
	Sharded bool

	files   []*File
	tensors map[string]Tensor
	origin  map[string]string // tensor name -> file path, for errors
	names   []string
}

// ReadConfig reads dir/config.json, keeping numbers as json.Number.
func ReadConfig(dir string) (map[string]any, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: missing config.json: not a Hugging Face model folder", path)
		}
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if cfg == nil {
		return nil, fmt.Errorf("%s: not a JSON object", path)
	}
	return cfg, nil
}

// WriteConfig atomically writes cfg as indented JSON (keys sorted, as transformers writes them).
func WriteConfig(path string, cfg map[string]any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteFile(path, buf.Bytes(), 0o644)
}

// Open opens the model folder dir: config.json, and model.safetensors or, failing that, the
// shards listed by model.safetensors.index.json (transformers prefers the single file too).
func Open(dir string) (*Checkpoint, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Dir: dir, Config: cfg, tensors: map[string]Tensor{}, origin: map[string]string{}}
	single := filepath.Join(dir, WeightsFile)
	if _, err := os.Stat(single); err == nil {
		if err := c.addFile(single, nil); err != nil {
			c.Close()
			return nil, err
		}
	} else if err := c.openShards(); err != nil {
		c.Close()
		return nil, err
	}
	sort.Strings(c.names)
	return c, nil
}

func (c *Checkpoint) openShards() error {
	index := filepath.Join(c.Dir, IndexFile)
	b, err := os.ReadFile(index)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: no %s or %s", c.Dir, WeightsFile, IndexFile)
		}
		return err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("%s: %w", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return fmt.Errorf("%s: empty or missing weight_map", index)
	}
	byShard := map[string][]string{}
	for name, shard := range idx.WeightMap {
		// A shard is a file of this folder; refuse paths that would escape it.
		if shard == "" || shard != filepath.Base(shard) || shard == ".." || strings.ContainsAny(shard, `/\`) {
			return fmt.Errorf("%s: tensor %s: bad shard file name %q", index, name, shard)
		}
		byShard[shard] = append(byShard[shard], name)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	c.Sharded = true
	for _, s := range shards {
		path := filepath.Join(c.Dir, s)
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: missing shard (listed in %s)", path, IndexFile)
			}
			return err
		}
		if err := c.addFile(path, byShard[s]); err != nil {
			return err
		}
	}
	return nil
}

// addFile maps one safetensors file and registers its tensors; want, when given, lists the
// tensors the index promises it holds.
func (c *Checkpoint) addFile(path string, want []string) error {
	sf, err := OpenSafetensors(path)
	if err != nil {
		return err
	}
	c.files = append(c.files, sf)
	for _, name := range want {
		if _, ok := sf.Tensor(name); !ok {
			return fmt.Errorf("%s: lacks tensor %s that %s lists", path, name, IndexFile)
		}
	}
	for _, name := range sf.Names() {
		if prev, dup := c.origin[name]; dup {
			return fmt.Errorf("%s: tensor %s also in %s", path, name, prev)
		}
		t, _ := sf.Tensor(name)
		c.tensors[name], c.origin[name] = t, path
		c.names = append(c.names, name)
	}
	return nil
}

// Close unmaps every file of the checkpoint.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	c.files, c.tensors = nil, nil
	return errors.Join(errs...)
}

// Names returns every tensor name, sorted.
func (c *Checkpoint) Names() []string { return c.names }

// Tensor returns the named tensor; its Data aliases the mapped file.
func (c *Checkpoint) Tensor(name string) (Tensor, bool) {
	t, ok := c.tensors[name]
	return t, ok
}

// Drop says the named tensor will not be read again soon: its pages leave the resident set (see
// File.Drop).
func (c *Checkpoint) Drop(name string) {
	path, ok := c.origin[name]
	if !ok {
		return
	}
	for _, f := range c.files {
		if f.Path == path {
			f.Drop(name)
		}
	}
}

// Float32 returns the named F32, F16 or BF16 tensor converted to float32, and its shape.
func (c *Checkpoint) Float32(name string) ([]float32, []int, error) {
	t, ok := c.tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("%s: no tensor %s", c.Dir, name)
	}
	v, err := ToFloat32(t)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: tensor %s: %w", c.origin[name], name, err)
	}
	return v, t.Shape, nil
}

// WeightBytes returns the total size of the safetensors files read.
func (c *Checkpoint) WeightBytes() int64 {
	var n int64
	for _, f := range c.files {
		n += f.Size()
	}
	return n
}

// weightPatterns match files that hold weights in some format; they are never copied alongside
// converted weights, which would leave a folder with two disagreeing copies.
var weightPatterns = []string{
	"*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json",
	"*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.gguf",
}

// ExtraFiles lists the regular files of the folder that are neither config.json nor weights
// (tokenizer.json, tokenizer_config.json, generation_config.json, ...): what a conversion copies
// unchanged. Hidden files and subfolders are left out; symlinks (as in the Hugging Face cache)
// count as the files they point to.
func (c *Checkpoint) ExtraFiles() ([]string, error) {
	entries, err := os.ReadDir(c.Dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if name == ConfigFile || strings.HasPrefix(name, ".") || isWeightFile(name) {
			continue
		}
		st, err := os.Stat(filepath.Join(c.Dir, name))
		if err != nil || !st.Mode().IsRegular() {
			continue // dangling links and folders are not ours to copy
		}
		out = append(out, name)
	}
	return out, nil
}

func isWeightFile(name string) bool {
	for _, p := range weightPatterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

// copyExtras copies the extra files of c into outDir.
func (c *Checkpoint) copyExtras(outDir string) ([]string, error) {
	files, err := c.ExtraFiles()
	if err != nil {
		return nil, err
	}
	for _, name := range files {
		if err := atomicfile.CopyFile(filepath.Join(outDir, name), filepath.Join(c.Dir, name)); err != nil {
			return nil, err
		}
	}
	return files, nil
}
