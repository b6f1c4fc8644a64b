package serve

import (
	"fmt"
	"regexp"
	"sort"
	"sync"

	"github.com/lathe-ml/lathe/model"
)

// AdapterLoader loads an adapter folder for the served model (peft.Load, bound to the model).
type AdapterLoader func(dir string) (model.Adapter, error)

// AdapterCombiner makes one adapter of several, weighted (peft.Combine).
type AdapterCombiner func(weights []float64, adapters []model.Adapter) (model.Adapter, error)

// Registry holds the adapters being served, by name; it is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	adapters map[string]registered
	load     AdapterLoader
	retire   func(a model.Adapter, release bool)
	// Combine, if set, lets LoadCombined serve weighted compositions of adapter folders.
	Combine AdapterCombiner
}

type registered struct {
	adapter model.Adapter
	dir     string
	owned   bool // loaded by the registry (Load), so freed when it leaves
}

// OnRetire sets what happens to an adapter that leaves the registry (unloaded or replaced):
// Generator.Retire frees it once no request uses it. release says the registry loaded it (Load)
// and owns it; an adapter given to Add stays its caller's.
func (r *Registry) OnRetire(f func(a model.Adapter, release bool)) {
	r.mu.Lock()
	r.retire = f
	r.mu.Unlock()
}

// put registers x under name (nil: removes it) and retires what it replaces; it reports whether
// there was one.
func (r *Registry) put(name string, x *registered) bool {
	r.mu.Lock()
	old, ok := r.adapters[name]
	if x != nil {
		r.adapters[name] = *x
	} else {
		delete(r.adapters, name)
	}
	retire := r.retire
	r.mu.Unlock()
	if ok && retire != nil {
		retire(old.adapter, old.owned)
	}
	return ok
}

// NewRegistry returns an empty registry that loads adapters with load (nil: loading refused).
func NewRegistry(load AdapterLoader) *Registry {
	return &Registry{adapters: map[string]registered{}, load: load}
}

var adapterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Load loads the adapter in dir under name, replacing any adapter of that name (a hot swap:
// requests already running keep the adapter they started with).
func (r *Registry) Load(name, dir string) error {
	if !adapterName.MatchString(name) {
		return fmt.Errorf("adapter name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	if r.load == nil {
		return fmt.Errorf("this server cannot load adapters")
	}
	a, err := r.load(dir)
	if err != nil {
		return fmt.Errorf("load adapter %s: %w", name, err)
	}
	r.put(name, &registered{adapter: a, dir: dir, owned: true})
	return nil
}

// LoadCombined loads the adapters in dirs and serves their weighted composition under name (one
// adapter whose delta is Σ weights[i]·delta_i), replacing any adapter of that name; the parts are
// released.
func (r *Registry) LoadCombined(name string, dirs []string, weights []float64) error {
	if !adapterName.MatchString(name) {
		return fmt.Errorf("adapter name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	switch {
	case r.load == nil || r.Combine == nil:
		return fmt.Errorf("this server cannot combine adapters")
	case len(dirs) == 0 || len(dirs) != len(weights):
		return fmt.Errorf("combine adapter %s: %d paths for %d weights", name, len(dirs), len(weights))
	}
	var parts []model.Adapter
	defer func() {
		for _, a := range parts {
			if rel, ok := a.(interface{ Release() }); ok {
				rel.Release()
			}
		}
	}()
	for _, dir := range dirs {
		a, err := r.load(dir)
		if err != nil {
			return fmt.Errorf("combine adapter %s: %w", name, err)
		}
		parts = append(parts, a)
	}
	c, err := r.Combine(weights, parts)
	if err != nil {
		return fmt.Errorf("combine adapter %s: %w", name, err)
	}
	r.put(name, &registered{adapter: c, dir: fmt.Sprint(dirs), owned: true})
	return nil
}

// Add registers an adapter that is already loaded.
func (r *Registry) Add(name string, a model.Adapter) error {
	if !adapterName.MatchString(name) {
		return fmt.Errorf("adapter name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	r.put(name, &registered{adapter: a})
	return nil
}

// Unload removes the adapter; it reports whether there was one.
func (r *Registry) Unload(name string) bool {
	return r.put(name, nil)
}

// Get returns the adapter of that name.
func (r *Registry) Get(name string) (model.Adapter, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.adapters[name]
	return a.adapter, ok
}

// Names lists the adapters in order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.adapters))
	for n := range r.adapters {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
