package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"sort"
)

// StopIDs are the token ids that end a generation, as transformers' generate stops: the
// eos_token_id of the model folder's generation_config.json and of config.json, each an id or a
// list (Llama 3 Instruct ends turns with <|eot_id|>, Qwen2 with <|im_end|>, not with the
// tokenizer's end of text). A missing generation_config.json is no error.
func StopIDs(dir string, cfg *Config) ([]int, error) {
	set := map[int]bool{}
	add := func(v any, where string) error {
		switch x := v.(type) {
		case nil:
		case float64:
			set[int(x)] = true
		case []any:
			for _, e := range x {
				f, ok := e.(float64)
				if !ok {
					return fmt.Errorf("%s: eos_token_id %v is not a list of ids", where, v)
				}
				set[int(f)] = true
			}
		default:
			return fmt.Errorf("%s: eos_token_id %v is not an id or a list of ids", where, v)
		}
		return nil
	}
	if cfg != nil {
		if err := add(cfg.EOSTokenID, "config.json"); err != nil {
			return nil, err
		}
	}
	path := filepath.Join(dir, "generation_config.json")
	raw, err := os.ReadFile(path)
	switch {
	case dir == "" || errors.Is(err, fs.ErrNotExist) || isGGUF(dir): // a GGUF's EOS is in its config
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	default:
		var gc struct {
			EOS any `json:"eos_token_id"`
		}
		if err := json.Unmarshal(raw, &gc); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		if err := add(gc.EOS, path); err != nil {
			return nil, err
		}
	}
	ids := make([]int, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids, nil
}
