// Package testdata finds the shared test files (a real pretrained model, stories260K) that live
// beside the checkout in ../shared/testdata, or wherever $LATHE_TESTDATA points. A user's fresh
// clone has none: tests that need them skip, unless $LATHE_REQUIRE_TESTDATA=1 (CI), where their
// absence is a failure.
package testdata

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Path returns the path of a file or folder under the shared testdata folder, skipping (or, with
// LATHE_REQUIRE_TESTDATA=1, failing) the test when it is missing.
func Path(t testing.TB, rel string) string {
	t.Helper()
	dir := os.Getenv("LATHE_TESTDATA")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		// internal/testdata/testdata.go → the repository root → ../shared/testdata
		dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "testdata")
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("LATHE_REQUIRE_TESTDATA") == "1" {
			t.Fatalf("test data %s is required (LATHE_REQUIRE_TESTDATA=1) but missing: %v", p, err)
		}
		recordSkip(t)
		t.Skipf("test data %s not found (set LATHE_TESTDATA to the shared testdata folder): %v", p, err)
	}
	return p
}

// recordSkip appends the test's package and name to the file $LATHE_SKIP_LOG names, when set:
// scripts/test reads it to say which tests did not run for lack of test data.
func recordSkip(t testing.TB) {
	log := os.Getenv("LATHE_SKIP_LOG")
	if log == "" {
		return
	}
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	pkg := "."
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(root, wd); err == nil {
			pkg = rel
		}
	}
	_, _ = f.WriteString(pkg + "." + t.Name() + "\n") // one write: lines from parallel packages do not interleave
}
