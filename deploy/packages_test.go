package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
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
	"time"

	"github.com/packetparamedic/reflector/controlplane/config"
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
	"/usr/share/doc/reflector/LICENSE",
	"/usr/share/doc/reflector/copyright",
	"/usr/lib/sysctl.d/60-reflector.conf",
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
	if cl := output(t, rpm, "-qp", "--changelog", p); !strings.Contains(cl, "0.1.0") {
		t.Errorf("rpm changelog:\n%s", cl)
	}
	if lic := strings.TrimSpace(output(t, rpm, "-qp", "--queryformat", "%{LICENSE}", p)); lic != "BlueOak-1.0.0" {
		t.Errorf("rpm License %q, want BlueOak-1.0.0 (the LICENSE file)", lic)
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
	if !slices.Contains(files, "/usr/share/doc/reflector/changelog.Debian.gz") {
		t.Error("deb lacks /usr/share/doc/reflector/changelog.Debian.gz")
	}
	if lic := output(t, dpkgDeb, "-f", p, "License"); strings.TrimSpace(lic) != "" && strings.TrimSpace(lic) != "BlueOak-1.0.0" {
		t.Errorf("deb License field %q", lic)
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

// purgeBackupDir is where dpkg --purge keeps the identity key.
const purgeBackupDir = "/var/backups/reflector"

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
	// A key made before the install by `sudo reflector show-id`: root's.
	backups, backupsErr := os.ReadDir(purgeBackupDir)
	if backupsErr == nil && len(backups) > 0 {
		t.Logf("%s not empty: purge backup not checked", purgeBackupDir)
	}
	keyPath := filepath.Join(stateDir, "identity.ed25519")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyBytes := bytes.Repeat([]byte{7}, 32)
	if err := os.WriteFile(keyPath, keyBytes, 0o600); err != nil {
		t.Fatal(err)
	}
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
	if st := mustStat(t, keyPath); strconv.Itoa(int(st.Uid)) != u.Uid || st.Mode&0o777 != 0o600 {
		t.Errorf("postinstall left %s owned by %d mode %o: the service user cannot read its identity", keyPath, st.Uid, st.Mode&0o777)
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
	if backupsErr != nil {
		t.Cleanup(func() { _ = os.RemoveAll(purgeBackupDir) })
	}
	kept, _ := filepath.Glob(filepath.Join(purgeBackupDir, "identity.ed25519.*"))
	if len(kept) == 0 || !strings.Contains(string(out), kept[len(kept)-1]) {
		t.Errorf("purge kept %v; its output must name the copy:\n%s", kept, out)
	} else if b, err := os.ReadFile(kept[len(kept)-1]); err != nil || !bytes.Equal(b, keyBytes) {
		t.Errorf("purge backup %s: %v, content differs from the key", kept[len(kept)-1], err)
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

// TestPackageVersionsSortInCommitOrder: the versions pkg-version.sh makes
// for a history (untagged commits, a pre-release, a release, commits after
// it, the next release) sort in that order for dpkg and for rpm.
func TestPackageVersionsSortInCommitOrder(t *testing.T) {
	dpkg := testutil.LookBinary(t, "dpkg")
	rpm := testutil.LookBinary(t, "rpm")
	history := []struct{ describe, count string }{
		{"f00d123", "9"}, // older commit, higher-looking hash
		{"0abc999", "10"},
		{"0abc999-dirty", "10"},
		{"1234abc", "120"},
		{"v1.2.0-rc1", "130"},
		{"v1.2.0", "131"},
		{"v1.2.0-dirty", "131"},
		{"v1.2.0-1-gdeadbee", "132"},
		{"v1.2.0-12-g0000001", "143"},
		{"v1.2.1", "150"},
		{"v1.10.0", "200"},
	}
	var versions []string
	for _, h := range history {
		v := strings.TrimSpace(output(t, "sh", "packaging/pkg-version.sh", h.describe, h.count))
		versions = append(versions, v)
	}
	t.Logf("package versions in commit order: %s", strings.Join(versions, " < "))
	for i := 1; i < len(versions); i++ {
		a, b := versions[i-1], versions[i]
		if err := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg --compare-versions %s lt %s: false", a, b)
		}
		cmp := strings.TrimSpace(output(t, rpm, "--eval", fmt.Sprintf(`%%{lua: print(rpm.vercmp("%s", "%s"))}`, a, b)))
		if cmp != "-1" {
			t.Errorf("rpm vercmp(%s, %s) = %s, want -1", a, b, cmp)
		}
	}
	if out, err := exec.Command("sh", "packaging/pkg-version.sh", "abc", "x").CombinedOutput(); err == nil {
		t.Errorf("a non-numeric count was accepted: %s", out)
	}
}

// TestLogrotateTwiceADay rotates a copy of the packaged logrotate rule (on
// a temporary path, as the current user) twice in a row: both rotations
// happen, with distinct dated names, and nothing is reported as existing.
func TestLogrotateTwiceADay(t *testing.T) {
	logrotate := testutil.LookBinary(t, "logrotate")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "audit.jsonl")
	rule := strings.NewReplacer(
		config.Default().Logging.AuditLogPath, logPath,
		"su reflector reflector", "su "+u.Username+" "+g.Name,
		"create 0600 reflector reflector", "create 0600 "+u.Username+" "+g.Name,
	).Replace(read(t, "logrotate/reflector"))
	for _, want := range []string{"dateformat -%Y%m%d-%H%M%S", "su " + u.Username} {
		if !strings.Contains(rule, want) {
			t.Fatalf("logrotate rule lacks %q:\n%s", want, rule)
		}
	}
	conf := filepath.Join(dir, "logrotate.conf")
	if err := os.WriteFile(conf, []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "logrotate.state")
	for i := range 2 {
		if err := os.WriteFile(logPath, []byte(fmt.Sprintf("{\"line\":%d}\n", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(logrotate, "-v", "-f", "-s", state, conf).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("already exists")) {
			t.Fatalf("rotation %d: %v\n%s", i+1, err, out)
		}
		// The dated name has one-second resolution: the next rotation
		// must fall into another second (as two runs a day do).
		if i == 0 {
			testutil.Eventually(t, 3*time.Second, "next second", func() bool { return time.Now().Format("05") != firstSecond(out) })
		}
	}
	rotated, _ := filepath.Glob(logPath + "-*")
	if len(rotated) != 2 {
		t.Fatalf("rotated files %v, want two", rotated)
	}
}

// firstSecond returns the seconds of the dated name logrotate -v reports
// renaming to, or "" when there is none.
func firstSecond(out []byte) string {
	i := bytes.Index(out, []byte("audit.jsonl-"))
	if i < 0 || len(out) < i+len("audit.jsonl-20060102-150405") {
		return ""
	}
	return string(out[i+len("audit.jsonl-20060102-1504") : i+len("audit.jsonl-20060102-150405")])
}

// TestLicenseMatchesPackages: the repository's LICENSE is the Blue Oak
// Model License 1.0.0, which the packages and the image declare.
func TestLicenseMatchesPackages(t *testing.T) {
	lic := read(t, "../LICENSE")
	for _, want := range []string{"# Blue Oak Model License", "Version 1.0.0", "## No Liability", "https://blueoakcouncil.org/license/1.0.0"} {
		if !strings.Contains(lic, want) {
			t.Errorf("LICENSE lacks %q", want)
		}
	}
	for file, want := range map[string]string{
		"nfpm.yaml":                     "license: BlueOak-1.0.0\n",
		"packaging/copyright":           "License: BlueOak-1.0.0\n",
		"container/Containerfile.local": `org.opencontainers.image.licenses="BlueOak-1.0.0"`,
		"../Containerfile":              `org.opencontainers.image.licenses="BlueOak-1.0.0"`,
	} {
		if !strings.Contains(read(t, file), want) {
			t.Errorf("%s does not declare %q", file, want)
		}
	}
}
