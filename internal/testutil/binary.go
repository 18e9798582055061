package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// BinaryVersion is the version stamped into the binary ReflectorBinary builds.
const BinaryVersion = "0.0.0-test"

// reflectorPkg is the import path ReflectorBinary builds.
const reflectorPkg = "github.com/packetparamedic/reflector/cmd/reflector"

// built is the reflector binary of this test process, built at most once.
var built struct {
	once   sync.Once
	inMain bool // Run is in charge of removing dir
	dir    string
	path   string
	out    []byte
	err    error
}

// Run runs the tests of m and then removes the binary ReflectorBinary built,
// if any. A package whose tests call ReflectorBinary has
//
//	func TestMain(m *testing.M) { os.Exit(testutil.Run(m)) }
func Run(m *testing.M) int {
	built.inMain = true
	code := m.Run()
	if built.dir != "" {
		if err := os.RemoveAll(built.dir); err != nil {
			fmt.Fprintln(os.Stderr, "remove the test binary:", err)
		}
	}
	return code
}

// ReflectorBinary returns the path of a reflector binary built from this
// checkout, once per test process, statically (CGO_ENABLED=0, -trimpath) with
// BinaryVersion stamped in, in a directory readable by every user (tests
// run it as an unprivileged user too). Under -short it skips the test:
// built-binary tests are not part of the quick run. The package's TestMain
// must call Run, which removes the binary at exit.
func ReflectorBinary(t testing.TB) string {
	t.Helper()
	SkipIfShort(t, "runs the built reflector binary")
	if !built.inMain {
		t.Fatal("testutil.ReflectorBinary needs TestMain to call testutil.Run (which removes the binary)")
	}
	built.once.Do(buildReflector)
	if built.err != nil {
		t.Fatalf("build %s: %v\n%s", reflectorPkg, built.err, built.out)
	}
	return built.path
}

// BinaryDir is the directory of ReflectorBinary's binary, removed with it:
// a place for other programs a test installs once per process.
func BinaryDir(t testing.TB) string {
	t.Helper()
	return filepath.Dir(ReflectorBinary(t))
}

func buildReflector() {
	built.dir, built.err = os.MkdirTemp("", "reflector-test-bin-")
	if built.err != nil {
		return
	}
	if built.err = os.Chmod(built.dir, 0o755); built.err != nil {
		return
	}
	built.path = filepath.Join(built.dir, "reflector")
	// go test puts its own GOROOT/bin first in PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		built.err = fmt.Errorf("find the go command: %w", err)
		return
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", built.path,
		"-ldflags", "-s -w -X github.com/packetparamedic/reflector/internal/buildinfo.Version="+BinaryVersion,
		reflectorPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	built.out, built.err = cmd.CombinedOutput()
}
