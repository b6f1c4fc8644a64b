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
		t.Skipf("test data %s not found (set LATHE_TESTDATA to the shared testdata folder): %v", p, err)
	}
	return p
}
