package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// errAdapterPath is the one answer to a name that is not an adapter folder under the adapter
// directory: it does not say whether something exists there, or elsewhere.
var errAdapterPath = errors.New("not an adapter folder under the server's adapter directory")

// AdapterPath resolves name, a folder relative to root (the server's --adapter-dir), to a real
// path inside root. Absolute names, ".." and symbolic links that lead out of root are refused,
// for the folder and for every file in it, so that a client reaches no file outside root.
// Errors name nothing outside root.
func AdapterPath(root, name string) (string, error) {
	if root == "" {
		return "", fmt.Errorf("loading adapters over HTTP is off: start the server with --adapter-dir DIR")
	}
	if name == "" || strings.ContainsRune(name, '\\') || !filepath.IsLocal(name) {
		return "", fmt.Errorf("adapter path %q: %w (a relative name without '..')", name, errAdapterPath)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("the adapter directory is not readable")
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(realRoot, name))
	if err != nil || !within(realRoot, dir) {
		return "", fmt.Errorf("adapter path %q: %w", name, errAdapterPath)
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return "", fmt.Errorf("adapter path %q: %w", name, errAdapterPath)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("adapter path %q: %w", name, errAdapterPath)
	}
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name()))
		if err != nil || !within(realRoot, target) {
			return "", fmt.Errorf("adapter path %q: %s links out of the adapter directory", name, e.Name())
		}
	}
	return dir, nil
}

// within reports whether path is root or under it (both cleaned, symbolic links resolved).
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && filepath.IsLocal(rel) || rel == "."
}
