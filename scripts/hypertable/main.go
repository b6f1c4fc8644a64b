// Command hypertable measures a hypernetwork's adapter on a held-out task of the generated task
// family (peft/hyper.Families) against no adapter, a LoRA trained on that task, and one LoRA trained
// on all the other tasks together: eval loss and exact match of greedy answers, with parameter
// counts. An answer counts as an exact match when the greedy text opens with the expected answer
// followed by anything but a letter (the models are not taught to stop). It prints a Markdown table, then one JSON object.
//
//	go run ./scripts/hypertable --model DIR --work DIR
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/lathe-ml/lathe"
	"github.com/lathe-ml/lathe/engine/cpu"
	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/peft/hyper"
	"github.com/lathe-ml/lathe/train"
)

type row struct {
	Name       string  `json:"name"`
	Params     int64   `json:"params"`
	EvalLoss   float64 `json:"eval_loss"`
	ExactMatch float64 `json:"exact_match"`
}

func main() {
	modelDir := flag.String("model", "", "model folder")
	work := flag.String("work", "", "work folder (tasks, adapters)")
	heldOut := flag.String("held-out", "last", "family held out of the hypernetwork's and the multi-task LoRA's training")
	steps := flag.Int("steps", 400, "steps of the multi-task runs (the single-task LoRA trains steps/2)")
	lr := flag.Float64("lr", 1e-2, "learning rate of the LoRAs")
	hyperLR := flag.Float64("hyper-lr", 1e-3, "learning rate of the hypernetworks")
	flag.Parse()
	if err := run(*modelDir, *work, *heldOut, *steps, *lr, *hyperLR); err != nil {
		fmt.Fprintln(os.Stderr, "hypertable:", err)
		os.Exit(1)
	}
}

func run(modelDir, work, heldOut string, steps int, lr, hyperLR float64) error {
	if modelDir == "" || work == "" {
		return fmt.Errorf("--model and --work are required")
	}
	tasksDir := filepath.Join(work, "tasks")
	if err := hyper.WriteFamilies(tasksDir, 1, 300, 40, heldOut); err != nil {
		return err
	}
	var held hyper.Family
	var multi []byte
	for _, f := range hyper.Families() {
		if f.Name == heldOut {
			held = f
			continue
		}
		b, err := os.ReadFile(filepath.Join(tasksDir, f.Name+".jsonl"))
		if err != nil {
			return err
		}
		multi = append(multi, b...)
	}
	if err := os.WriteFile(filepath.Join(tasksDir, "multi.jsonl"), multi, 0o644); err != nil {
		return err
	}
	loraCfg := func(data, out string, n int) train.Config {
		c := train.DefaultConfig()
		c.Model, c.Data, c.Out, c.Method, c.Targets = modelDir, data, out, "lora", []string{"q_proj", "v_proj"}
		c.Steps, c.Batch, c.Seq, c.LR, c.Dropout, c.EvalFraction, c.Overwrite = n, 8, 64, lr, 0, 0, true
		return c
	}
	b := cpu.New()
	params := map[string]int64{}
	for _, r := range []struct {
		name, data string
		steps      int
	}{{"single", held.Name + ".jsonl", steps / 2}, {"multi", "multi.jsonl", steps}} {
		tr, err := train.New(loraCfg(filepath.Join(tasksDir, r.data), filepath.Join(work, r.name), r.steps), b)
		if err != nil {
			return err
		}
		res, err := tr.Run(context.Background(), nil)
		tr.Close()
		if err != nil {
			return err
		}
		params[r.name] = res.Params
		fmt.Fprintf(os.Stderr, "%s LoRA: loss %.4f → %.4f\n", r.name, res.LossStart, res.LossEnd)
	}
	m, err := model.Load(modelDir, b, model.LoadOptions{})
	if err != nil {
		return err
	}
	defer m.Release()
	enc, err := hyper.NewModelEncoder(m)
	if err != nil {
		return err
	}
	tasks, err := hyper.ReadTasks(filepath.Join(tasksDir, "tasks.jsonl"))
	if err != nil {
		return err
	}
	embs, err := hyper.EncodeTasks(enc, tasks)
	if err != nil {
		return err
	}
	hc := hyper.DefaultConfig()
	hc.EmbDim, hc.Encoder, hc.BaseModel = enc.Dim(), enc.Name(), modelDir
	for _, head := range []string{hyper.HeadL, hyper.HeadM} {
		hc.Head = head
		net, err := hyper.New(hc, m.Cfg, b, 1)
		if err != nil {
			return err
		}
		res, err := hyper.TrainSFT(m, net, tasks, embs, hyper.TrainConfig{Steps: steps, Batch: 8, Seq: 64, LR: hyperLR, Warmup: steps / 20, MaxGradNorm: 1, Seed: 1}, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "hypernetwork %s: loss %.4f → %.4f\n", head, res.LossStart, res.LossEnd)
		emb, err := enc.Encode(held.Description)
		if err != nil {
			return err
		}
		a, err := net.Generate(emb)
		if err != nil {
			return err
		}
		name := "hyper-" + head
		if err := a.Save(filepath.Join(work, name)); err != nil {
			return err
		}
		params[name] = net.NumParams()
		params[name+"-adapter"] = a.NumParams()
		a.Release()
		net.Release()
	}
	lm, err := lathe.Open(modelDir, lathe.Options{Device: "cpu"})
	if err != nil {
		return err
	}
	defer lm.Close()
	evalPath := filepath.Join(tasksDir, held.Name+"-eval.jsonl")
	var evalSet []hyper.Example
	raw, err := os.ReadFile(evalPath)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e hyper.Example
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			return err
		}
		evalSet = append(evalSet, e)
	}
	var rows []row
	for _, name := range []string{"", "single", "multi", "hyper-L", "hyper-M"} {
		if name != "" {
			if err := lm.LoadAdapter(name, filepath.Join(work, name)); err != nil {
				return err
			}
		}
		ev, err := lm.Evaluate(evalPath, name, 64)
		if err != nil {
			return err
		}
		hit := 0
		s := lathe.DefaultSampling()
		s.Temperature, s.MaxTokens, s.Stop = 0, 16, []string{"\n"}
		for _, e := range evalSet {
			res, err := lm.Generate(context.Background(), lathe.Request{Prompt: e.Prompt, Adapter: name, Sampling: &s}, nil)
			if err != nil {
				return err
			}
			if rightAnswer(res.Text, e.Completion) {
				hit++
			}
		}
		label := map[string]string{"": "no adapter", "single": "LoRA trained on the held-out task", "multi": "multi-task LoRA (other tasks)",
			"hyper-L": "hypernetwork (L head), generated adapter", "hyper-M": "hypernetwork (M head), generated adapter"}[name]
		rows = append(rows, row{Name: label, Params: params[name], EvalLoss: ev.Loss, ExactMatch: float64(hit) / float64(len(evalSet))})
	}
	fmt.Printf("held-out task: %q (%d eval examples)\n\n", held.Description, len(evalSet))
	fmt.Println("| adapter | trained params | eval loss | exact match |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Printf("| %s | %d | %.4f | %.0f%% |\n", r.Name, r.Params, r.EvalLoss, 100*r.ExactMatch)
	}
	fmt.Printf("\ngenerated adapters: %d params each\n", params["hyper-L-adapter"])
	out, _ := json.Marshal(map[string]any{"held_out": held.Description, "rows": rows})
	fmt.Println(string(out))
	return nil
}

// rightAnswer says whether text opens with want followed by the end or a character that is not a
// letter (" sun+es8" answers "sun"; " sunny" does not).
func rightAnswer(text, want string) bool {
	text, want = strings.TrimSpace(text), strings.TrimSpace(want)
	if !strings.HasPrefix(text, want) {
		return false
	}
	rest := []rune(text[len(want):])
	return len(rest) == 0 || !unicode.IsLetter(rest[0])
}
