package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// The tests in this file run Podman itself: the image `make
// container-local` builds is run by name from the store buildah wrote
// it to, and deploy/quadlet is put through Podman's Quadlet generator.
// Podman runs as root with everything in temporary directories: its own
// store (vfs: nothing stays mounted), run root and containers.conf, so
// the host's configuration and images are left alone.

// podmanCLI runs podman (or buildah) against one temporary store.
type podmanCLI struct {
	podman, buildah string
	global          []string // --root, --runroot, --storage-driver
	env             []string // CONTAINERS_CONF
}

// newPodman returns a podmanCLI whose store, run root and containers.conf
// live under t.TempDir(). It skips loudly, or fails when
// REFLECTOR_REQUIRE_INTEROP is set, when podman or buildah is missing or
// the test does not run as root.
func newPodman(t *testing.T) *podmanCLI {
	t.Helper()
	p := &podmanCLI{podman: testutil.LookBinary(t, "podman"), buildah: testutil.LookBinary(t, "buildah")}
	if os.Geteuid() != 0 {
		msg := "PODMAN TEST NOT RUN: needs root (rootless Podman needs subuid/subgid ranges this test does not set up)"
		if os.Getenv(testutil.RequireInteropEnv) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	p.global = []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs"}
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(containersConf(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.env = []string{"CONTAINERS_CONF=" + conf}
	return p
}

// containersConf is the test's containers.conf. Systemd need not be PID
// 1 (cgroupfs, events to a file). Rootful Podman raises nofile and nproc
// to 1048576 and 4194304 unless told otherwise, which fails in a sandbox
// without CAP_SYS_RESOURCE; the limits are lowered to the host's nofile
// hard limit (at most 65536, what the Quadlet asks for) and 4096 threads.
func containersConf(t *testing.T) string {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	nofile := min(rl.Max, 65536)
	return fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%d:%d", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
`, nofile, nofile)
}

func (p *podmanCLI) run(args ...string) (string, string, error) {
	return runCmd(p.podman, p.env, append(append([]string{}, p.global...), args...)...)
}

func (p *podmanCLI) must(t *testing.T, args ...string) string {
	t.Helper()
	return must(t, p.podman, p.env, append(append([]string{}, p.global...), args...)...)
}

// TestPodmanRun builds the image as `make container-local` does (buildah
// bud --format docker into containers-storage) and runs it with Podman BY
// NAME from that store: read-only, as 65534, every capability dropped, a
// named volume. show-id and status answer through `podman exec`, a client
// in the container pairs and runs a test over pp-link/1, `podman
// healthcheck run` runs the image's HEALTHCHECK and passes, and fails once
// the audit log cannot be written; the Endpoint ID survives recreating the
// container on the same volume.
func TestPodmanRun(t *testing.T) {
	p := newPodman(t)
	root := stageTree(t, testutil.ReflectorBinary(t))
	img := "localhost/reflector:" + uniq("podmantest-")
	vol, name := uniq("reflector-data-test-"), uniq("reflector-test-")
	t.Cleanup(func() {
		_, _, _ = p.run("rm", "-f", "-t", "0", name)
		_, _, _ = p.run("volume", "rm", "-f", vol)
		_, _, _ = p.run("rmi", "-f", img)
	})
	bud := append(append([]string{}, p.global...), "bud", "--format", "docker", "--quiet",
		"--build-arg", "VERSION="+testutil.BinaryVersion, "--build-arg", "COMMIT=podmantest",
		"-f", filepath.Join(root, "deploy/container/Containerfile.local"), "-t", img, root)
	must(t, p.buildah, p.env, bud...)

	// The image keeps its health check in Podman's view of it.
	hc := p.must(t, "image", "inspect", "--format", "{{json .HealthCheck.Test}}", img)
	if strings.TrimSpace(hc) != `["CMD","/usr/local/bin/reflector","status"]` {
		t.Errorf("podman sees the image's health check as %s", hc)
	}

	// No published ports: rootful networking would change the host's
	// firewall; the client runs in the container's network namespace.
	p.must(t, "run", "-d", "--name", name, "--read-only", "--cap-drop", "ALL",
		"--security-opt", "no-new-privileges", "--user", "65534:65534", "--network", "none",
		"-v", vol+":/var/lib/reflector", "--health-interval", "disable", img)
	testutil.Eventually(t, 30*time.Second, "reflector status answers in "+name, func() bool {
		_, _, err := p.run("exec", name, "reflector", "status")
		return err == nil
	})
	id := strings.TrimSpace(p.must(t, "exec", name, "reflector", "show-id"))
	if !strings.HasPrefix(id, "PP-") {
		t.Fatalf("show-id printed %q", id)
	}
	if user := strings.TrimSpace(p.must(t, "inspect", "--format", "{{.Config.User}}", name)); user != "65534:65534" {
		t.Errorf("container user %q", user)
	}
	if ro := strings.TrimSpace(p.must(t, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", name)); ro != "true" {
		t.Errorf("container read-only root: %s", ro)
	}
	out, errs, err := p.run("healthcheck", "run", name)
	if err != nil {
		t.Fatalf("podman healthcheck run: %v\n%s%s", err, out, errs)
	}
	if hs := strings.TrimSpace(p.must(t, "inspect", "--format", "{{.State.Health.Status}}", name)); hs != "healthy" {
		t.Errorf("health after podman healthcheck run: %q, want healthy", hs)
	}

	// pp-link/1 served: a client (the same binary) pairs and runs a
	// tunneled test over the container's loopback, its key on the volume.
	token, pid := podmanPair(t, p, name)
	if pid != id {
		t.Fatalf("pair printed %s, show-id %s", pid, id)
	}
	const key = "/var/lib/reflector/client.ed25519"
	p.must(t, "exec", name, "reflector", "pair-with", "--peer", "127.0.0.1:4000", "--token", token, "--expect-id", id, "--identity", key)
	out = p.must(t, "exec", name, "reflector", "test", "--peer", "127.0.0.1:4000", "--identity", key, "--expect-id", id,
		"--json", "throughput", "-t", "1", "-P", "2")
	checkThroughput(t, out, "tunneled", id)

	// The health check can fail: the audit log made unwritable (a
	// directory where the file was, reopened on SIGHUP).
	mnt := strings.TrimSpace(p.must(t, "volume", "inspect", "--format", "{{.Mountpoint}}", vol))
	auditPath := filepath.Join(mnt, "audit.jsonl")
	if err := os.Rename(auditPath, auditPath+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(auditPath, 0o700); err != nil {
		t.Fatal(err)
	}
	p.must(t, "kill", "--signal", "HUP", name)
	testutil.Eventually(t, 10*time.Second, "podman healthcheck run fails with the audit log unwritable", func() bool {
		out, errs, err := p.run("healthcheck", "run", name)
		return err != nil && strings.Contains(out+errs, "unhealthy")
	})
	if err := os.Remove(auditPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(auditPath+".moved", auditPath); err != nil {
		t.Fatal(err)
	}

	// Same volume, new container: same Endpoint ID.
	p.must(t, "rm", "-f", "-t", "5", name)
	p.must(t, "run", "-d", "--name", name, "--read-only", "--cap-drop", "ALL", "--user", "65534:65534",
		"--network", "none", "-v", vol+":/var/lib/reflector", "--health-interval", "disable", img)
	testutil.Eventually(t, 30*time.Second, "reflector status answers in the new "+name, func() bool {
		_, _, err := p.run("healthcheck", "run", name)
		return err == nil
	})
	if again := strings.TrimSpace(p.must(t, "exec", name, "reflector", "show-id")); again != id {
		t.Errorf("Endpoint ID after recreating the container: %s, was %s", again, id)
	}
}

// podmanPair opens a pairing window in the container, as DEPLOY.md's
// `podman exec reflector reflector pair` does.
func podmanPair(t *testing.T, p *podmanCLI, ctr string) (token, id string) {
	t.Helper()
	out := p.must(t, "exec", ctr, "reflector", "pair", "--ttl", "2m")
	return field(t, out, "Token:"), field(t, out, "Endpoint ID:")
}

// quadletEnv names a Quadlet generator binary to use instead of the
// installed one.
const quadletEnv = "REFLECTOR_QUADLET"

// quadletBinary returns Podman's Quadlet generator: $REFLECTOR_QUADLET,
// Podman's own (/usr/libexec/podman/quadlet), or quadlet on PATH, which
// .ci/quadlet.sh builds: Debian bookworm's Podman 4.3 has none (Quadlet
// came with 4.4, and these files need 4.7). Missing, the test skips
// loudly, or fails when REFLECTOR_REQUIRE_INTEROP is set.
func quadletBinary(t *testing.T) string {
	t.Helper()
	testutil.SkipIfShort(t, "runs podman's quadlet generator")
	for _, p := range []string{os.Getenv(quadletEnv), "/usr/libexec/podman/quadlet", "/usr/lib/podman/quadlet"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("quadlet"); err == nil {
		return p
	}
	msg := "QUADLET TEST NOT RUN: no Quadlet generator (/usr/libexec/podman/quadlet, Podman >= 4.7; Debian bookworm " +
		"has none): build one with .ci/quadlet.sh or point " + quadletEnv + " at one"
	if os.Getenv(testutil.RequireInteropEnv) != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// execWords matches the words of a generated command line; a double-quoted
// argument is one word.
var execWords = regexp.MustCompile(`"[^"]*"|\S+`)

// podmanCommand returns a generated ExecStart with every --flag=value
// spelled --flag value and a space at both ends, so that checks do not
// depend on how a Quadlet version writes its flags.
func podmanCommand(execStart string) string {
	var words []string
	for _, w := range execWords.FindAllString(execStart, -1) {
		if flag, val, ok := strings.Cut(w, "="); ok && strings.HasPrefix(w, "--") {
			words = append(words, flag, val)
			continue
		}
		words = append(words, w)
	}
	return " " + strings.Join(words, " ") + " "
}

// TestQuadletGenerates runs Podman's Quadlet generator in dry-run mode on
// deploy/quadlet: both units convert without an error or warning, and the
// generated podman run carries what the .container file asks for.
func TestQuadletGenerates(t *testing.T) {
	quadlet := quadletBinary(t)
	dir := t.TempDir()
	for _, f := range []string{"reflector.container", "reflector.volume"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(read(t, "quadlet/"+f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	version, _, _ := runCmd(quadlet, nil, "-version")
	out, errs, err := runCmd(quadlet, []string{"QUADLET_UNIT_DIRS=" + dir}, "-dryrun")
	t.Logf("quadlet %s", strings.TrimSpace(version))
	if err != nil {
		t.Fatalf("quadlet -dryrun: %v\n%s", err, errs)
	}
	for line := range strings.Lines(errs) {
		if !strings.Contains(line, "Loading source unit file") {
			t.Errorf("quadlet: %s", strings.TrimSpace(line))
		}
	}
	units := map[string]string{}
	var cur string
	for line := range strings.Lines(out) {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "---"); ok && strings.HasSuffix(name, "---") {
			cur = strings.TrimSuffix(name, "---")
			continue
		}
		units[cur] += line
	}
	vol := field(t, units["reflector-volume.service"], "ExecStart=")
	if !strings.HasSuffix(vol, "volume create --ignore reflector-data") {
		t.Errorf("volume unit ExecStart %q, want the volume reflector-data", vol)
	}
	run := podmanCommand(field(t, units["reflector.service"], "ExecStart="))
	for _, want := range []string{
		" run --name reflector ", " --cap-drop all ", " --read-only ", " --security-opt no-new-privileges ",
		" --user 65534:65534 ", " -v reflector-data:/var/lib/reflector ",
		` --health-cmd "/usr/local/bin/reflector status" `, " --health-on-failure kill ",
		" --label io.containers.autoupdate=local ", " --stop-timeout 30 ",
		" localhost/reflector:latest serve ",
	} {
		if !strings.Contains(run, want) {
			t.Errorf("generated ExecStart lacks %q:\n%s", want, run)
		}
	}
	for _, want := range []string{"ExecReload=/usr/bin/podman kill --signal HUP reflector", "Restart=on-failure", "Requires=reflector-volume.service"} {
		if !strings.Contains(units["reflector.service"], want) {
			t.Errorf("generated reflector.service lacks %q", want)
		}
	}
}
