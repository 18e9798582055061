package deploy_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// nfpmModule is the packager, run through the Go module proxy as the
// Makefile does.
const nfpmModule = "github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"

// pkgVersion is the package version of the test packages.
const pkgVersion = "0.0.0~deploytest"

var (
	nfpmOnce sync.Once
	nfpmPath string
	nfpmErr  error
	nfpmOut  []byte
)

// nfpm installs the packager once per test binary into the directory of
// the reflector binary (removed by TestMain).
func nfpm(t *testing.T) string {
	t.Helper()
	binDir := testutil.BinaryDir(t)
	nfpmOnce.Do(func() {
		nfpmPath = filepath.Join(binDir, "nfpm")
		cmd := exec.Command("go", "install", nfpmModule)
		cmd.Dir = binDir
		cmd.Env = append(os.Environ(), "GOBIN="+binDir)
		nfpmOut, nfpmErr = cmd.CombinedOutput()
	})
	if nfpmErr != nil {
		t.Fatalf("go install %s: %v\n%s", nfpmModule, nfpmErr, nfpmOut)
	}
	return nfpmPath
}

// buildPackage runs nfpm for packager ("deb" or "rpm") on a staged tree and
// returns the package's path.
func buildPackage(t *testing.T, packager string) string {
	t.Helper()
	root := stageTree(t, testutil.ReflectorBinary(t))
	out := t.TempDir()
	cmd := exec.Command(nfpm(t), "pkg", "--config", "deploy/nfpm.yaml", "--packager", packager, "--target", out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PKG_VERSION="+pkgVersion, "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nfpm %s: %v\n%s", packager, err, b)
	}
	m, err := filepath.Glob(filepath.Join(out, "*."+packager))
	if err != nil || len(m) != 1 {
		t.Fatalf("nfpm %s produced %v (%v)", packager, m, err)
	}
	return m[0]
}

// packagedFiles are the files both packages must install.
var packagedFiles = []string{
	"/usr/bin/reflector",
	"/usr/lib/systemd/system/reflector.service",
	configPath,
	"/etc/logrotate.d/reflector",
	"/usr/lib/firewalld/services/reflector.xml",
	"/usr/lib/firewalld/services/reflector-direct.xml",
	"/usr/share/doc/reflector/DEPLOY.md",
	"/usr/share/doc/reflector/METRICS.md",
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func TestRPM(t *testing.T) {
	testutil.SkipIfShort(t, "builds an rpm")
	rpm := testutil.LookBinary(t, "rpm")
	p := buildPackage(t, "rpm")
	files := strings.Fields(output(t, rpm, "-qlp", p))
	for _, f := range packagedFiles {
		if !slices.Contains(files, f) {
			t.Errorf("rpm -qlp lacks %s: %v", f, files)
		}
	}
	conf := strings.Fields(output(t, rpm, "-qcp", p))
	if !slices.Contains(conf, configPath) {
		t.Errorf("rpm config files %v lack %s", conf, configPath)
	}
	scripts := output(t, rpm, "-qp", "--scripts", p)
	for _, want := range []string{"useradd --system", "install -d -m 0750 -o reflector -g reflector /var/lib/reflector", "systemctl disable --now reflector.service"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scriptlets lack %q", want)
		}
	}
	info := output(t, rpm, "-qip", p)
	if !strings.Contains(info, "x86_64") || !strings.Contains(info, strings.ReplaceAll(pkgVersion, "-", "_")) {
		t.Errorf("rpm -qip:\n%s", info)
	}
}

// TestDeb builds the deb, checks its contents, and, as root on a dpkg
// system without the package, installs it, checks the result and purges it
// again, restoring the machine.
func TestDeb(t *testing.T) {
	testutil.SkipIfShort(t, "builds and installs a deb")
	dpkgDeb := testutil.LookBinary(t, "dpkg-deb")
	p := buildPackage(t, "deb")
	var files []string
	for _, l := range strings.Split(output(t, dpkgDeb, "-c", p), "\n") {
		if f := strings.Fields(l); len(f) >= 6 {
			files = append(files, strings.TrimPrefix(f[5], "."))
		}
	}
	for _, f := range packagedFiles {
		if !slices.Contains(files, f) {
			t.Errorf("deb lacks %s: %v", f, files)
		}
	}
	if conf := output(t, dpkgDeb, "-I", p, "conffiles"); !strings.Contains(conf, configPath) {
		t.Errorf("deb conffiles %q lack %s", conf, configPath)
	}

	if reason := installBlocker(); reason != "" {
		t.Logf("deb install NOT TESTED: %s", reason)
		return
	}
	installAndPurge(t, p)
}

// installBlocker says why installing the deb here would be wrong, or "".
func installBlocker() string {
	switch {
	case os.Geteuid() != 0:
		return "not root"
	case !fileExists("/etc/debian_version"):
		return "not a Debian system"
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		return "dpkg not installed"
	}
	if err := exec.Command("dpkg-query", "-W", "reflector").Run(); err == nil {
		return "a reflector package is already installed; not touching it"
	}
	if _, err := user.Lookup("reflector"); err == nil {
		return "a reflector user already exists; not touching it"
	}
	if ents, err := os.ReadDir(stateDir); err == nil && len(ents) > 0 {
		return stateDir + " exists and is not empty; not touching it"
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func installAndPurge(t *testing.T, deb string) {
	// An empty state dir left by something else is restored afterwards.
	prevState, statErr := os.Stat(stateDir)
	t.Cleanup(func() {
		out, err := exec.Command("dpkg", "--purge", "reflector").CombinedOutput()
		if err != nil {
			t.Errorf("dpkg --purge reflector: %v\n%s", err, out)
		}
		if statErr == nil && !fileExists(stateDir) {
			st := prevState.Sys().(*syscall.Stat_t)
			// Other tests running `reflector` with the built-in defaults
			// may have created it again meanwhile: that is fine too.
			if err := os.Mkdir(stateDir, prevState.Mode().Perm()); errors.Is(err, fs.ErrExist) {
				return
			} else if err != nil {
				t.Errorf("restore %s: %v", stateDir, err)
			} else if err := os.Chown(stateDir, int(st.Uid), int(st.Gid)); err != nil {
				t.Errorf("restore %s owner: %v", stateDir, err)
			}
		}
	})
	output(t, "dpkg", "-i", deb)

	u, err := user.Lookup("reflector")
	if err != nil {
		t.Fatalf("postinstall did not create the reflector user: %v", err)
	}
	fi, err := os.Stat(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if strconv.Itoa(int(st.Uid)) != u.Uid || fi.Mode().Perm() != 0o750 {
		t.Errorf("%s: owner %d mode %v, want %s and 0750", stateDir, st.Uid, fi.Mode().Perm(), u.Uid)
	}
	unit := "/usr/lib/systemd/system/reflector.service"
	if !fileExists(unit) {
		t.Errorf("%s not installed", unit)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		// verify also loads the machine's other units: only what it says
		// about ours counts (an installed irtt.service warned here).
		out, err := exec.Command(sa, "verify", unit).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("reflector")) {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	} else {
		t.Log("systemd-analyze not installed: unit not verified")
	}
	ver := output(t, "/usr/bin/reflector", "version")
	if !strings.Contains(ver, testutil.BinaryVersion) {
		t.Errorf("/usr/bin/reflector version = %q, want %s", ver, testutil.BinaryVersion)
	}
	if conf := output(t, "dpkg-query", "-W", "-f=${Conffiles}", "reflector"); !strings.Contains(conf, configPath) {
		t.Errorf("installed conffiles %q lack %s", conf, configPath)
	}

	out, err := exec.Command("dpkg", "--purge", "reflector").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg --purge reflector: %v\n%s", err, out)
	}
	for _, f := range packagedFiles {
		if fileExists(f) {
			t.Errorf("%s left behind by dpkg --purge", f)
		}
	}
	// A state directory may reappear at once (other tests run `reflector`
	// with the built-in defaults as root), but not the package's.
	if fi, err := os.Stat(stateDir); err == nil && strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)) == u.Uid {
		t.Errorf("%s (owned by the reflector user) left behind by dpkg --purge", stateDir)
	}
	if _, err := user.Lookup("reflector"); err == nil {
		t.Error("reflector user left behind by dpkg --purge")
	}
}
