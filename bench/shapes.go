package bench

// ModelShape is the layer geometry of a published model, from its Hugging Face config.json.
type ModelShape struct {
	Name string `json:"name"`
	// Repo is the Hugging Face repository whose config.json gave the numbers.
	Repo string `json:"repo"`
	// Billions is the parameter count in billions, the x axis of the throughput chart.
	Billions     float64 `json:"billions"`
	Hidden       int     `json:"hidden"`
	Intermediate int     `json:"intermediate"`
	Heads        int     `json:"heads"`
	KVHeads      int     `json:"kv_heads"`
	HeadDim      int     `json:"head_dim"`
}

// Models are the published configs the kernels are measured on, smallest first.
var Models = []ModelShape{
	{Name: "Qwen2-0.5B", Repo: "Qwen/Qwen2-0.5B", Billions: 0.49, Hidden: 896, Intermediate: 4864, Heads: 14, KVHeads: 2, HeadDim: 64},
	{Name: "Llama-3.2-1B", Repo: "meta-llama/Llama-3.2-1B", Billions: 1.24, Hidden: 2048, Intermediate: 8192, Heads: 32, KVHeads: 8, HeadDim: 64},
	{Name: "Llama-3.2-3B", Repo: "meta-llama/Llama-3.2-3B", Billions: 3.21, Hidden: 3072, Intermediate: 8192, Heads: 24, KVHeads: 8, HeadDim: 128},
	{Name: "Mistral-7B-v0.1", Repo: "mistralai/Mistral-7B-v0.1", Billions: 7.24, Hidden: 4096, Intermediate: 14336, Heads: 32, KVHeads: 8, HeadDim: 128},
	{Name: "Llama-3-8B", Repo: "meta-llama/Meta-Llama-3-8B", Billions: 8.03, Hidden: 4096, Intermediate: 14336, Heads: 32, KVHeads: 8, HeadDim: 128},
}

// Tiny is the geometry used on software adapters (lavapipe): there the numbers only show that the
// kernels run, so the shapes are kept small enough to finish in seconds.
var Tiny = ModelShape{Name: "tiny", Repo: "(synthetic)", Billions: 0.01, Hidden: 256, Intermediate: 688, Heads: 4, KVHeads: 2, HeadDim: 64}

// Proj is one linear layer of a decoder layer: y = x·Wᵀ with W: [Out, In].
type Proj struct {
	Name    string `json:"name"`
	Out, In int
}

// Projections lists the seven linear layers of one decoder layer, in checkpoint order.
func (m ModelShape) Projections() []Proj {
	q, kv := m.Heads*m.HeadDim, m.KVHeads*m.HeadDim
	return []Proj{
		{"q_proj", q, m.Hidden}, {"k_proj", kv, m.Hidden}, {"v_proj", kv, m.Hidden}, {"o_proj", m.Hidden, q},
		{"gate_proj", m.Intermediate, m.Hidden}, {"up_proj", m.Intermediate, m.Hidden}, {"down_proj", m.Hidden, m.Intermediate},
	}
}

// UniqueProjections merges projections of one shape (k and v, gate and up, and q and o where the
// heads span the hidden size) into one entry named "k_proj/v_proj", in first-seen order, so each
// distinct matrix is timed once. Count says how many layers share it.
func (m ModelShape) UniqueProjections() []UniqueProj {
	var out []UniqueProj
	for _, p := range m.Projections() {
		found := false
		for i := range out {
			if out[i].Out == p.Out && out[i].In == p.In {
				out[i].Name += "/" + p.Name
				out[i].Count++
				found = true
			}
		}
		if !found {
			out = append(out, UniqueProj{Proj: p, Count: 1})
		}
	}
	return out
}

// UniqueProj is a projection shape and how many of a layer's projections have it.
type UniqueProj struct {
	Proj
	Count int
}
