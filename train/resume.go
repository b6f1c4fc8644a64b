package train

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/lathe-ml/lathe/engine"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft"
)

// ResumeEvent is what resuming found, a line of the metrics log: the checkpoint resumed from,
// the newer ones skipped as unreadable, and the hyperparameters that differ from the
// checkpoint's run (old and new values).
type ResumeEvent struct {
	Step       int               `json:"step"`
	Event      string            `json:"event"` // "resume"
	Checkpoint string            `json:"checkpoint"`
	Skipped    []string          `json:"skipped_checkpoints,omitempty"`
	Changed    map[string][2]any `json:"changed,omitempty"`
	// Reasons holds why each skipped checkpoint could not be read.
	Reasons map[string]string `json:"skip_reasons,omitempty"`
}

// Warnings words the event for a person.
func (e ResumeEvent) Warnings() []string {
	var w []string
	for _, s := range e.Skipped {
		w = append(w, fmt.Sprintf("%s is unreadable (%s); resumed from %s instead", s, e.Reasons[s], e.Checkpoint))
	}
	keys := make([]string, 0, len(e.Changed))
	for k := range e.Changed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w = append(w, fmt.Sprintf("resumed with %s %v (the checkpoint's run had %v)", k, jsonText(e.Changed[k][1]), jsonText(e.Changed[k][0])))
	}
	return w
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// structural are the settings (Config's JSON names) that shape the adapter or the base it
// trains on: a resumed run must keep them, or it would train one adapter and save another.
var structural = []string{"model", "method", "rank", "alpha", "rslora", "targets", "quant_blocksize", "optim"}

// notCompared are settings that say how to start, not what to train.
var notCompared = []string{"resume", "overwrite", "out"}

// resumeFrom loads the newest readable checkpoint of cks (oldest first): its trainer and
// optimizer state and its adapter. Unreadable newer ones are skipped and reported. A checkpoint
// whose run differs from cfg in a structural setting is refused, naming them; other differences
// are reported in the event.
func resumeFrom(cfg Config, cks []string, mc *model.Config, b engine.Backend) (*Checkpoint, *peft.Adapter, *ResumeEvent, error) {
	ev := &ResumeEvent{Event: "resume", Reasons: map[string]string{}}
	for i := len(cks) - 1; i >= 0; i-- {
		name := filepath.Base(cks[i])
		ck, err := LoadCheckpoint(cks[i])
		if err == nil {
			var a *peft.Adapter
			if a, err = peft.Load(ck.Dir, mc, b); err == nil {
				ev.Step, ev.Checkpoint = ck.State.Step, name
				if err := compareRuns(cfg, ck, a, ev); err != nil {
					a.Release()
					return nil, nil, nil, err
				}
				return ck, a, ev, nil
			}
		}
		ev.Skipped = append(ev.Skipped, name)
		ev.Reasons[name] = err.Error()
	}
	return nil, nil, nil, fmt.Errorf("train: --resume: no checkpoint in %s is readable: %s", cfg.Out, ev.Reasons[ev.Skipped[0]])
}

// compareRuns checks the checkpoint's run against cfg: structural differences are an error,
// others go into ev.Changed.
func compareRuns(cfg Config, ck *Checkpoint, a *peft.Adapter, ev *ResumeEvent) error {
	var diffs []string
	reported := map[string]bool{}
	// The adapter itself says its type and rank, whatever trainer_state.json holds.
	want, got := cfg.adapterConfig(), a.Config
	if got.PeftType != want.PeftType || got.UseDoRA != want.UseDoRA {
		diffs = append(diffs, fmt.Sprintf("method (checkpoint %s adapter, now %s)", adapterKind(got), cfg.Method))
		reported["method"] = true
	} else if got.PeftType == peft.TypeLoRA && got.R != want.R {
		diffs = append(diffs, fmt.Sprintf("rank (checkpoint %d, now %d)", got.R, want.R))
		reported["rank"] = true
	}
	if len(ck.State.Config) > 0 {
		var old, cur map[string]any
		if err := json.Unmarshal(ck.State.Config, &old); err != nil {
			return fmt.Errorf("train: --resume: %s: config: %w", ck.Dir, err)
		}
		raw, _ := json.Marshal(cfg)
		_ = json.Unmarshal(raw, &cur)
		ia3 := cfg.Method == "ia3"
		keys := make([]string, 0, len(cur))
		for k := range cur {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if slices.Contains(notCompared, k) || reported[k] || reflect.DeepEqual(old[k], cur[k]) {
				continue
			}
			if k == "model" && samePath(old[k], cur[k]) {
				continue
			}
			if k == "optim" && old[k] == nil && cur[k] == OptimAdamW {
				continue // a checkpoint from before --optim: f32 AdamW
			}
			if slices.Contains(structural, k) {
				if ia3 && (k == "rank" || k == "alpha" || k == "rslora") {
					continue // IA3 has none of these
				}
				diffs = append(diffs, fmt.Sprintf("%s (checkpoint %s, now %s)", k, jsonText(old[k]), jsonText(cur[k])))
				continue
			}
			if ev.Changed == nil {
				ev.Changed = map[string][2]any{}
			}
			ev.Changed[k] = [2]any{old[k], cur[k]}
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("train: --resume: %s was trained with other settings: %s; these change the adapter, so resume with the same ones, or start afresh with --overwrite or another --out",
			filepath.Base(ck.Dir), strings.Join(diffs, ", "))
	}
	return nil
}

// samePath says whether two model paths from configs name the same folder.
func samePath(a, b any) bool {
	as, ok1 := a.(string)
	bs, ok2 := b.(string)
	if !ok1 || !ok2 {
		return false
	}
	aa, err1 := filepath.Abs(as)
	ba, err2 := filepath.Abs(bs)
	return err1 == nil && err2 == nil && aa == ba
}

// adapterKind names an adapter's type for messages: LORA, IA3, or LORA with DoRA.
func adapterKind(c peft.Config) string {
	if c.UseDoRA {
		return c.PeftType + " (DoRA)"
	}
	return c.PeftType
}
