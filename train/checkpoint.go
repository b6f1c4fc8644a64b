package train

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/internal/atomicfile"
	"github.com/lathe-ml/lathe/model/checkpoint"
)

// Files of a training checkpoint folder, besides the adapter's own (adapter_config.json and
// adapter_model.safetensors, written by the caller's adapter writer).
const (
	OptimizerFile    = "optimizer.safetensors"
	TrainerStateFile = "trainer_state.json"
	checkpointPrefix = "checkpoint-"
	tmpPrefix        = ".tmp-" + checkpointPrefix
	oldPrefix        = ".old-" + checkpointPrefix
)

// Suffixes of the moment tensors' names in optimizer.safetensors, torch's state names.
const (
	expAvgSuffix   = ".exp_avg"
	expAvgSqSuffix = ".exp_avg_sq"
	// The 8-bit optimizer's tensors, bitsandbytes' state names: each moment's codes (U8 of the
	// parameter's shape) and block scales (F32).
	state1Suffix  = ".state1"
	state2Suffix  = ".state2"
	absmax1Suffix = ".absmax1"
	absmax2Suffix = ".absmax2"
)

// ErrNoCheckpoint is returned by LatestCheckpoint when a folder holds no checkpoint.
var ErrNoCheckpoint = errors.New("no checkpoint")

// LossPoint is one value of a loss history. A non-finite loss (a diverged step) is written to
// JSON as null and read back as NaN, since JSON has no NaN.
type LossPoint struct {
	Step int
	Loss float64
}

type lossPointJSON struct {
	Step int       `json:"step"`
	Loss jsonFloat `json:"loss"`
}

// MarshalJSON writes {"step": s, "loss": x}, with null for a non-finite loss.
func (p LossPoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(lossPointJSON{Step: p.Step, Loss: jsonFloat(p.Loss)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *LossPoint) UnmarshalJSON(b []byte) error {
	var j lossPointJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	p.Step, p.Loss = j.Step, float64(j.Loss)
	return nil
}

// TrainerState is trainer_state.json: what, besides the adapter and the optimizer, a run needs to
// resume exactly where it stopped.
type TrainerState struct {
	// Step is the number of optimizer steps taken.
	Step int `json:"step"`
	// Data is where the training batcher reads next.
	Data DataPosition `json:"data_position"`
	// RNG is the trainer's generator (dropout seeds) after Step steps.
	RNG RNG `json:"rng"`
	// Tokens is the number of target tokens trained on so far.
	Tokens int64 `json:"tokens"`
	// Elapsed is the training time so far in seconds.
	Elapsed float64 `json:"elapsed_s"`
	// LossHistory and EvalHistory are the train and eval losses by step.
	LossHistory []LossPoint `json:"loss_history"`
	EvalHistory []LossPoint `json:"eval_history"`
	// Config is the run's configuration, as the trainer marshals it.
	Config json.RawMessage `json:"config,omitempty"`
	// LossScale is dynamic loss scaling's state (runs with loss scaling only).
	LossScale *LossScale `json:"loss_scale,omitempty"`
}

// Checkpoint is a loaded training checkpoint. The adapter's files are in Dir.
type Checkpoint struct {
	Dir       string
	State     TrainerState
	Optimizer OptimizerState
}

// CheckpointDir is the folder name of the checkpoint at step under root, as transformers names it.
func CheckpointDir(root string, step int) string {
	return filepath.Join(root, checkpointPrefix+strconv.Itoa(step))
}

// SaveCheckpoint writes a checkpoint of state.Step under root and returns its folder. The adapter
// is written by writeAdapter into the folder it is given. Everything goes to a temporary folder
// first, is synced, and is renamed into place, so a crash or error at any point leaves the
// previous checkpoints as they were and never a partial one under a checkpoint name. Afterwards
// only the newest keep checkpoints are kept (keep <= 0 keeps all).
func SaveCheckpoint(root string, state TrainerState, opt OptimizerState, writeAdapter func(dir string) error, keep int) (dir string, err error) {
	final := CheckpointDir(root, state.Step)
	wrap := func(err error) error { return fmt.Errorf("save checkpoint %s: %w", final, err) }
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", wrap(err)
	}
	removeStale(root)
	tmp, err := os.MkdirTemp(root, tmpPrefix+strconv.Itoa(state.Step)+"-")
	if err != nil {
		return "", wrap(err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if writeAdapter != nil {
		if err := writeAdapter(tmp); err != nil {
			return "", wrap(fmt.Errorf("adapter: %w", err))
		}
	}
	if err := writeOptimizer(filepath.Join(tmp, OptimizerFile), opt); err != nil {
		return "", wrap(err)
	}
	js, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return "", wrap(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, TrainerStateFile), append(js, '\n'), 0o644); err != nil {
		return "", wrap(err)
	}
	// The adapter writer's files may not be synced; the rename must not outrun their data.
	if err := syncTree(tmp); err != nil {
		return "", wrap(err)
	}
	var old string
	if _, serr := os.Stat(final); serr == nil {
		// Re-saving a step (after a resume): move the old one aside until the new one is in place.
		old = filepath.Join(root, oldPrefix+strconv.Itoa(state.Step))
		os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			return "", wrap(err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		if old != "" {
			os.Rename(old, final)
		}
		return "", wrap(err)
	}
	if err := atomicfile.SyncDir(root); err != nil {
		return "", wrap(err)
	}
	if old != "" {
		os.RemoveAll(old)
	}
	if keep > 0 {
		if err := pruneCheckpoints(root, keep, final); err != nil {
			return final, wrap(err)
		}
	}
	return final, nil
}

// removeStale deletes temporary folders of saves that crashed.
func removeStale(root string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), tmpPrefix) {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}

// ListCheckpoints returns the checkpoint folders under root, oldest step first.
func ListCheckpoints(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	type ck struct {
		step int
		dir  string
	}
	var cks []ck
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), checkpointPrefix) {
			continue
		}
		step, err := strconv.Atoi(strings.TrimPrefix(e.Name(), checkpointPrefix))
		if err != nil || step < 0 {
			continue
		}
		cks = append(cks, ck{step, filepath.Join(root, e.Name())})
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	out := make([]string, len(cks))
	for i, c := range cks {
		out[i] = c.dir
	}
	return out, nil
}

// LatestCheckpoint returns the folder of the newest checkpoint under root, or ErrNoCheckpoint.
func LatestCheckpoint(root string) (string, error) {
	cks, err := ListCheckpoints(root)
	if err != nil {
		return "", err
	}
	if len(cks) == 0 {
		return "", fmt.Errorf("%s: %w", root, ErrNoCheckpoint)
	}
	return cks[len(cks)-1], nil
}

func pruneCheckpoints(root string, keep int, current string) error {
	cks, err := ListCheckpoints(root)
	if err != nil {
		return err
	}
	var errs []error
	for i := 0; i < len(cks)-keep; i++ {
		if cks[i] == current {
			continue
		}
		if err := os.RemoveAll(cks[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LoadCheckpoint reads the trainer state and optimizer state of the checkpoint folder dir. The
// adapter is the caller's to load from the same folder.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	js, err := os.ReadFile(filepath.Join(dir, TrainerStateFile))
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	ck := &Checkpoint{Dir: dir}
	if err := json.Unmarshal(js, &ck.State); err != nil {
		return nil, fmt.Errorf("load checkpoint: %s: %w", filepath.Join(dir, TrainerStateFile), err)
	}
	if ck.Optimizer, err = readOptimizer(filepath.Join(dir, OptimizerFile)); err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	return ck, nil
}

// writeOptimizer writes the moments as <name>.exp_avg and <name>.exp_avg_sq F32 tensors, with
// the step in the header's metadata; an 8-bit state as its codes and scales (writeOptimizer8).
func writeOptimizer(path string, s OptimizerState) error {
	if s.Optim == OptimAdamW8bit {
		return writeOptimizer8(path, s)
	}
	ts := make(map[string]checkpoint.Tensor, 2*len(s.Params))
	for _, p := range s.Params {
		n := 1
		for _, d := range p.Shape {
			n *= d
		}
		if len(p.M) != n || len(p.V) != n {
			return fmt.Errorf("optimizer state %s: %d and %d values for shape %v", p.Name, len(p.M), len(p.V), p.Shape)
		}
		if _, dup := ts[p.Name+expAvgSuffix]; dup {
			return fmt.Errorf("optimizer state: parameter %s appears twice", p.Name)
		}
		ts[p.Name+expAvgSuffix] = checkpoint.FromFloat32(p.M, p.Shape)
		ts[p.Name+expAvgSqSuffix] = checkpoint.FromFloat32(p.V, p.Shape)
	}
	meta := map[string]string{"format": "pt", "optimizer": "adamw", "step": strconv.Itoa(s.Step)}
	return checkpoint.WriteSafetensors(path, ts, meta)
}

// writeOptimizer8 writes an 8-bit state as bitsandbytes' state dict holds it: per parameter
// <name>.state1 and .state2 (U8 codes of the parameter's shape: the device's word padding, codes
// of zero, is dropped) and .absmax1 and .absmax2 (F32 block scales); the metadata holds the step
// and the blocksize.
func writeOptimizer8(path string, s OptimizerState) error {
	ts := make(map[string]checkpoint.Tensor, 4*len(s.Params))
	meta := map[string]string{"format": "pt", "optimizer": OptimAdamW8bit, "step": strconv.Itoa(s.Step),
		"blocksize": strconv.Itoa(engine.Optim8Block)}
	for _, p := range s.Params {
		n := engine.Shape(p.Shape).Numel()
		nb, n4 := engine.Optim8Blocks(n), engine.Optim8Codes(n)
		if len(p.Shape) == 0 || len(p.Q) != 2*n4 || len(p.Absmax) != 2*nb {
			return fmt.Errorf("optimizer state %s: %d codes and %d scales for shape %v", p.Name, len(p.Q), len(p.Absmax), p.Shape)
		}
		if _, dup := ts[p.Name+state1Suffix]; dup {
			return fmt.Errorf("optimizer state: parameter %s appears twice", p.Name)
		}
		shape := append([]int(nil), p.Shape...)
		ts[p.Name+state1Suffix] = checkpoint.Tensor{DType: "U8", Shape: shape, Data: p.Q[:n]}
		ts[p.Name+state2Suffix] = checkpoint.Tensor{DType: "U8", Shape: shape, Data: p.Q[n4 : n4+n]}
		ts[p.Name+absmax1Suffix] = checkpoint.FromFloat32(p.Absmax[:nb], []int{nb})
		ts[p.Name+absmax2Suffix] = checkpoint.FromFloat32(p.Absmax[nb:], []int{nb})
	}
	return checkpoint.WriteSafetensors(path, ts, meta)
}

// readOptimizer8 reads writeOptimizer8's file.
func readOptimizer8(path string, f *checkpoint.File, s OptimizerState) (OptimizerState, error) {
	if bs := f.Metadata["blocksize"]; bs != strconv.Itoa(engine.Optim8Block) {
		return OptimizerState{}, fmt.Errorf("%s: 8-bit blocksize %q, want %d", path, bs, engine.Optim8Block)
	}
	names := f.Names()
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasSuffix(name, state1Suffix) {
			continue
		}
		base := strings.TrimSuffix(name, state1Suffix)
		s1, _ := f.Tensor(name)
		shape := append([]int(nil), s1.Shape...)
		if len(shape) == 0 || s1.DType != "U8" {
			return OptimizerState{}, fmt.Errorf("%s: %s is %s%v, want U8 of the parameter's shape", path, name, s1.DType, s1.Shape)
		}
		n := int(s1.Numel()) // the reader checked the data's length against the shape
		nb, n4 := engine.Optim8Blocks(n), engine.Optim8Codes(n)
		ps := ParamState{Name: base, Shape: shape, Q: zeroCodes(n)}
		for k, suf := range []string{state1Suffix, state2Suffix, absmax1Suffix, absmax2Suffix} {
			t, ok := f.Tensor(base + suf)
			if k < 2 {
				if !ok || t.DType != "U8" || fmt.Sprint(t.Shape) != fmt.Sprint(shape) {
					return OptimizerState{}, fmt.Errorf("%s: %s%s is missing or not U8%v", path, base, suf, shape)
				}
				copy(ps.Q[k*n4:], t.Data)
				continue
			}
			if !ok || t.DType != "F32" || len(t.Shape) != 1 || t.Shape[0] != nb {
				return OptimizerState{}, fmt.Errorf("%s: %s%s is missing or not F32[%d]", path, base, suf, nb)
			}
			v, err := checkpoint.ToFloat32(t)
			if err != nil {
				return OptimizerState{}, fmt.Errorf("%s: %s: %w", path, base, err)
			}
			ps.Absmax = append(ps.Absmax, v...)
		}
		s.Params = append(s.Params, ps)
	}
	if 4*len(s.Params) != len(names) {
		return OptimizerState{}, fmt.Errorf("%s: %d tensors for %d parameters (each needs state1, state2, absmax1 and absmax2)", path, len(names), len(s.Params))
	}
	return s, nil
}

func readOptimizer(path string) (OptimizerState, error) {
	f, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		return OptimizerState{}, err
	}
	defer f.Close()
	var s OptimizerState
	if s.Step, err = strconv.Atoi(f.Metadata["step"]); err != nil || s.Step < 0 {
		return OptimizerState{}, fmt.Errorf("%s: metadata step %q is not a step count", path, f.Metadata["step"])
	}
	switch s.Optim = cmp.Or(f.Metadata["optimizer"], OptimAdamW); s.Optim {
	case OptimAdamW8bit:
		return readOptimizer8(path, f, s)
	case OptimAdamW:
	default:
		return OptimizerState{}, fmt.Errorf("%s: optimizer %q is not adamw or adamw8bit", path, s.Optim)
	}
	names := f.Names()
	sort.Strings(names)
	for _, name := range names {
		if !strings.HasSuffix(name, expAvgSqSuffix) {
			if !strings.HasSuffix(name, expAvgSuffix) {
				return OptimizerState{}, fmt.Errorf("%s: unexpected tensor %s", path, name)
			}
			continue
		}
		base := strings.TrimSuffix(name, expAvgSqSuffix)
		mt, ok := f.Tensor(base + expAvgSuffix)
		if !ok {
			return OptimizerState{}, fmt.Errorf("%s: %s has no %s", path, name, base+expAvgSuffix)
		}
		vt, _ := f.Tensor(name)
		if mt.DType != "F32" || vt.DType != "F32" || fmt.Sprint(mt.Shape) != fmt.Sprint(vt.Shape) {
			return OptimizerState{}, fmt.Errorf("%s: moments of %s are %s%v and %s%v, want F32 of one shape", path, base, mt.DType, mt.Shape, vt.DType, vt.Shape)
		}
		m, err := checkpoint.ToFloat32(mt)
		if err != nil {
			return OptimizerState{}, fmt.Errorf("%s: %s: %w", path, base, err)
		}
		v, err := checkpoint.ToFloat32(vt)
		if err != nil {
			return OptimizerState{}, fmt.Errorf("%s: %s: %w", path, base, err)
		}
		s.Params = append(s.Params, ParamState{Name: base, Shape: append([]int(nil), mt.Shape...), M: m, V: v})
	}
	if 2*len(s.Params) != len(names) {
		return OptimizerState{}, fmt.Errorf("%s: %d tensors for %d parameters (every exp_avg needs its exp_avg_sq)", path, len(names), len(s.Params))
	}
	return s, nil
}

// syncTree fsyncs every file and folder under dir.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return atomicfile.SyncDir(path)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
