package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"

	"github.com/lathe-ml/lathe/model"
)

// AdapterLoader loads an adapter folder for the served model (peft.Load, bound to the model).
type AdapterLoader func(dir string) (model.Adapter, error)

// AdapterCombiner makes one adapter of several, weighted (peft.Combine).
type AdapterCombiner func(weights []float64, adapters []model.Adapter) (model.Adapter, error)

// LoadError is an adapter folder that could not be read or loaded. Its text may quote the
// folder's files: a server logs it and tells its client less.
type LoadError struct{ Err error }

func (e *LoadError) Error() string { return e.Err.Error() }

func (e *LoadError) Unwrap() error { return e.Err }

// MaxCombine is the most adapter folders one composition names.
const MaxCombine = 16

// Registry holds the adapters being served, by name; it is safe for concurrent use. Folders of
// identical content are loaded once, whatever their paths and names. With MaxAdapters or
// MaxBytes set, loading past a cap evicts the least recently used adapters that no request is
// using (never the pinned ones).
type Registry struct {
	mu      sync.Mutex
	loading sync.Mutex // one load at a time, so that the caps hold
	names   map[string]*entry
	byKey   map[string]*entry // loaded by the registry, by content
	load    AdapterLoader
	retire  func(a model.Adapter, release bool)
	clock   uint64
	evicted int
	// Combine, if set, lets LoadCombined serve weighted compositions of adapter folders.
	Combine AdapterCombiner
	// MaxAdapters caps the distinct adapters loaded (0: no cap).
	MaxAdapters int
	// MaxBytes caps the bytes of the adapters loaded, counted as their folders' files (0: no
	// cap).
	MaxBytes int64
}

// entry is one loaded adapter, under one or more names.
type entry struct {
	adapter model.Adapter
	key     string // content key; "" for adapters given to Add
	bytes   int64
	names   int    // names that point at it
	inUse   int    // requests using it (Acquire)
	used    uint64 // when last named by a request or loaded
	owned   bool   // loaded by the registry, so freed when it leaves
	pinned  bool   // never evicted
	leaving bool   // no name holds it: retired when the last request lets it go
}

// OnRetire sets what happens to an adapter that leaves the registry (unloaded, replaced or
// evicted): Generator.Retire frees it once no request uses it. release says the registry loaded
// it and owns it; an adapter given to Add stays its caller's.
func (r *Registry) OnRetire(f func(a model.Adapter, release bool)) {
	r.mu.Lock()
	r.retire = f
	r.mu.Unlock()
}

// NewRegistry returns an empty registry that loads adapters with load (nil: loading refused).
func NewRegistry(load AdapterLoader) *Registry {
	return &Registry{names: map[string]*entry{}, byKey: map[string]*entry{}, load: load}
}

var adapterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkName(name string) error {
	if !adapterName.MatchString(name) {
		return fmt.Errorf("adapter name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// fingerprint is the content key of an adapter folder (a hash of its files' names and bytes) and
// the bytes of those files. A folder over limit bytes is refused before it is read.
func fingerprint(dir string, limit int64) (string, int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, &LoadError{err}
	}
	var files []string
	var total int64
	for _, e := range ents {
		info, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", 0, &LoadError{err}
		}
		if info.Mode().IsRegular() {
			files = append(files, e.Name())
			total += info.Size()
		}
	}
	if limit > 0 && total > limit {
		return "", 0, fmt.Errorf("the adapter's files take %d bytes, over the server's cap of %d (--max-adapter-bytes)", total, limit)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, name := range files {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return "", 0, &LoadError{err}
		}
		fmt.Fprintf(h, "%q\n", name)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", 0, &LoadError{err}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), total, nil
}

// Load loads the adapter in dir under name, pinned (never evicted), replacing any adapter of
// that name (a hot swap: requests already running keep the adapter they started with).
func (r *Registry) Load(name, dir string) error {
	return r.loadDir(name, dir, true)
}

// LoadEvictable is Load for an adapter that the caps may evict once no request uses it (the
// ones loaded over HTTP).
func (r *Registry) LoadEvictable(name, dir string) error {
	return r.loadDir(name, dir, false)
}

func (r *Registry) loadDir(name, dir string, pinned bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	if r.load == nil {
		return fmt.Errorf("this server cannot load adapters")
	}
	r.loading.Lock()
	defer r.loading.Unlock()
	key, size, err := fingerprint(dir, r.MaxBytes)
	if err != nil {
		return fmt.Errorf("load adapter %s: %w", name, err)
	}
	if r.reuse(name, key, pinned) {
		return nil
	}
	if err := r.makeRoom(size, name); err != nil {
		return fmt.Errorf("load adapter %s: %w", name, err)
	}
	a, err := r.load(dir)
	if err != nil {
		return fmt.Errorf("load adapter %s: %w", name, &LoadError{err})
	}
	r.put(name, &entry{adapter: a, key: key, bytes: size, owned: true, pinned: pinned})
	return nil
}

// reuse points name at the adapter already loaded with content key, if there is one.
func (r *Registry) reuse(name, key string, pinned bool) bool {
	r.mu.Lock()
	e, ok := r.byKey[key]
	if ok {
		e.pinned = e.pinned || pinned
	}
	r.mu.Unlock()
	if ok {
		r.put(name, e)
	}
	return ok
}

// makeRoom evicts idle adapters, least recently used first, until one of size bytes fits the
// caps; the adapter that name holds now counts as leaving.
func (r *Registry) makeRoom(size int64, name string) error {
	r.mu.Lock()
	var retired []*entry
	defer func() {
		retire := r.retire
		r.mu.Unlock()
		for _, e := range retired {
			if retire != nil {
				retire(e.adapter, e.owned)
			}
		}
	}()
	for {
		count, bytes := 1, size
		replaced := r.names[name]
		for _, e := range r.byKey {
			if e == replaced && e.names == 1 {
				continue
			}
			count, bytes = count+1, bytes+e.bytes
		}
		if (r.MaxAdapters <= 0 || count <= r.MaxAdapters) && (r.MaxBytes <= 0 || bytes <= r.MaxBytes) {
			return nil
		}
		var lru *entry
		for _, e := range r.byKey {
			if e.inUse == 0 && !e.pinned && e != replaced && (lru == nil || e.used < lru.used) {
				lru = e
			}
		}
		if lru == nil {
			return fmt.Errorf("the server holds %d adapters (%d bytes) and every one is pinned or in use: the caps are %d adapters, %d bytes (--max-adapters, --max-adapter-bytes)",
				count-1, bytes-size, r.MaxAdapters, r.MaxBytes)
		}
		for n, e := range r.names {
			if e == lru {
				delete(r.names, n)
			}
		}
		delete(r.byKey, lru.key)
		r.evicted++
		retired = append(retired, lru)
	}
}

// put registers e under name (nil: removes it) and retires the adapter it replaces if no other
// name holds it; it reports whether there was one.
func (r *Registry) put(name string, e *entry) bool {
	r.mu.Lock()
	old, ok := r.names[name]
	if e != nil {
		if old == e {
			r.mu.Unlock()
			return true
		}
		r.names[name] = e
		e.names++
		r.clock++
		e.used = r.clock
		if e.key != "" {
			r.byKey[e.key] = e
		}
	} else {
		delete(r.names, name)
	}
	var gone *entry
	if ok {
		old.names--
		if old.names == 0 {
			if old.key != "" && r.byKey[old.key] == old {
				delete(r.byKey, old.key)
			}
			// A request that named it may not have reached the generator yet: it is retired
			// when the last such request lets it go (Acquire).
			if old.inUse > 0 {
				old.leaving = true
			} else {
				gone = old
			}
		}
	}
	retire := r.retire
	r.mu.Unlock()
	if gone != nil && retire != nil {
		retire(gone.adapter, gone.owned)
	}
	return ok
}

// LoadCombined loads the adapters in dirs and serves their weighted composition under name (one
// adapter whose delta is Σ weights[i]·delta_i), replacing any adapter of that name. A folder
// named twice, or already being served, is read once; the parts loaded for it are released.
func (r *Registry) LoadCombined(name string, dirs []string, weights []float64) error {
	if err := checkName(name); err != nil {
		return err
	}
	switch {
	case r.load == nil || r.Combine == nil:
		return fmt.Errorf("this server cannot combine adapters")
	case len(dirs) == 0 || len(dirs) != len(weights):
		return fmt.Errorf("combine adapter %s: %d paths for %d weights", name, len(dirs), len(weights))
	case len(dirs) > MaxCombine:
		return fmt.Errorf("combine adapter %s: %d adapters, at most %d", name, len(dirs), MaxCombine)
	}
	r.loading.Lock()
	defer r.loading.Unlock()
	keys := make([]string, len(dirs))
	sizes := map[string]int64{}
	var total int64
	for i, dir := range dirs {
		k, size, err := fingerprint(dir, r.MaxBytes)
		if err != nil {
			return fmt.Errorf("combine adapter %s: %w", name, err)
		}
		keys[i] = k
		if _, seen := sizes[k]; !seen {
			sizes[k] = size
			total += size
		}
	}
	if r.MaxBytes > 0 && total > r.MaxBytes {
		return fmt.Errorf("combine adapter %s: its parts take %d bytes, over the server's cap of %d (--max-adapter-bytes)", name, total, r.MaxBytes)
	}
	combo := sha256.New()
	for i, k := range keys {
		fmt.Fprintf(combo, "%s %v\n", k, weights[i])
	}
	key := "combine:" + hex.EncodeToString(combo.Sum(nil))
	if r.reuse(name, key, false) {
		return nil
	}
	if err := r.makeRoom(total, name); err != nil {
		return fmt.Errorf("combine adapter %s: %w", name, err)
	}
	byKey := map[string]model.Adapter{}
	var loaded []model.Adapter
	defer func() {
		for _, a := range loaded {
			if rel, ok := a.(interface{ Release() }); ok {
				rel.Release()
			}
		}
	}()
	parts := make([]model.Adapter, len(dirs))
	for i, dir := range dirs {
		a, ok := byKey[keys[i]]
		if !ok {
			var err error
			if a, err = r.load(dir); err != nil {
				return fmt.Errorf("combine adapter %s: %w", name, &LoadError{err})
			}
			byKey[keys[i]] = a
			loaded = append(loaded, a)
		}
		parts[i] = a
	}
	c, err := r.Combine(weights, parts)
	if err != nil {
		return fmt.Errorf("combine adapter %s: %w", name, &LoadError{err})
	}
	r.put(name, &entry{adapter: c, key: key, bytes: total, owned: true})
	return nil
}

// Add registers an adapter that is already loaded (pinned; it stays its caller's).
func (r *Registry) Add(name string, a model.Adapter) error {
	if err := checkName(name); err != nil {
		return err
	}
	r.put(name, &entry{adapter: a, pinned: true})
	return nil
}

// Unload removes the adapter; it reports whether there was one.
func (r *Registry) Unload(name string) bool {
	return r.put(name, nil)
}

// Get returns the adapter of that name.
func (r *Registry) Get(name string) (model.Adapter, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.names[name]
	if !ok {
		return nil, false
	}
	return e.adapter, true
}

// Acquire returns the adapter of that name, marked in use (not evicted) until release is
// called; release is safe to call more than once.
func (r *Registry) Acquire(name string) (a model.Adapter, release func(), ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.names[name]
	if !ok {
		return nil, nil, false
	}
	e.inUse++
	r.clock++
	e.used = r.clock
	var once sync.Once
	return e.adapter, func() {
		once.Do(func() {
			r.mu.Lock()
			e.inUse--
			gone := e.inUse == 0 && e.leaving
			retire := r.retire
			r.mu.Unlock()
			if gone && retire != nil {
				retire(e.adapter, e.owned)
			}
		})
	}, true
}

// Names lists the adapters in order.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.names))
	for n := range r.names {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RegistryStats describes what a registry holds.
type RegistryStats struct {
	// Adapters is the number of distinct adapters loaded and Bytes their size; Evicted counts
	// the adapters the caps evicted.
	Adapters int
	Bytes    int64
	Evicted  int
}

// Stats returns what the registry holds.
func (r *Registry) Stats() RegistryStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[*entry]bool{}
	var st RegistryStats
	for _, e := range r.names {
		if !seen[e] {
			seen[e] = true
			st.Adapters++
			st.Bytes += e.bytes
		}
	}
	st.Evicted = r.evicted
	return st
}
