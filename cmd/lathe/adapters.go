package main

import (
	"fmt"

	"github.com/lathe-ml/lathe/model"
	"github.com/lathe-ml/lathe/serve"
)

// adapterLoader loads PEFT adapter folders for m.
func adapterLoader(m *model.Model) serve.AdapterLoader {
	return func(dir string) (model.Adapter, error) {
		return nil, fmt.Errorf("adapter %s: adapters are not supported yet", dir)
	}
}
