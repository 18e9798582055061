package deploy_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// The tests in this file run the image for real with the Docker Engine
// (no registry: the image is built from a binary made on the host, FROM
// scratch). They skip loudly when `docker info` fails, and fail instead
// when REFLECTOR_REQUIRE_INTEROP is set (CI). Every container, volume,
// network and compose project has a unique name and is removed at the end.

var (
	imageOnce sync.Once
	imageTag  string
	imageErr  error
)

// requireDocker returns the docker binary, once the daemon answers.
func requireDocker(t *testing.T) string {
	t.Helper()
	docker := testutil.LookBinary(t, "docker")
	if out, err := exec.Command(docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("DOCKER TEST NOT RUN: `docker info` failed (%v): %s", err, bytes.TrimSpace(out))
		if os.Getenv(testutil.RequireInteropEnv) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return docker
}

// requireCompose returns the compose command: docker-compose (1.x, Debian)
// or the docker compose v2 plugin.
func requireCompose(t *testing.T, docker string) []string {
	t.Helper()
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if exec.Command(docker, "compose", "version").Run() == nil {
		return []string{docker, "compose"}
	}
	testutil.LookBinary(t, "docker-compose") // skips or fails loudly
	return nil
}

// uniq returns prefix plus a random suffix, for names on a shared daemon.
func uniq(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// runCmd runs a command and returns its stdout, stderr and error.
func runCmd(name string, env []string, args ...string) (string, string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// must runs a command and fails the test when it fails.
func must(t *testing.T, name string, env []string, args ...string) string {
	t.Helper()
	out, errs, err := runCmd(name, env, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, errs)
	}
	return out
}

// dockerImage builds the scratch image once per test binary from the
// host-built binary with deploy/container/Containerfile.local; TestMain
// removes it.
func dockerImage(t *testing.T, docker string) string {
	t.Helper()
	imageOnce.Do(func() {
		tag := uniq("localhost/reflector-deploytest-") + ":latest"
		root := stageTree(t, testutil.ReflectorBinary(t))
		cmd := exec.Command(docker, "build", "-q", "-f", "deploy/container/Containerfile.local",
			"--build-arg", "VERSION="+testutil.BinaryVersion, "--build-arg", "COMMIT=deploytest", "-t", tag, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("docker build: %w\n%s", err, out)
			return
		}
		imageTag = tag
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageTag
}

// removeDockerImage is called by TestMain.
func removeDockerImage() {
	if imageTag != "" {
		_ = exec.Command("docker", "rmi", "-f", imageTag).Run()
	}
}

// field returns the value after label on the first line starting with it.
func field(t *testing.T, out, label string) string {
	t.Helper()
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), label); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q line in:\n%s", label, out)
	return ""
}

// testResult is the part of `reflector test --json` the tests read.
type testResult struct {
	ServerID string `json:"server_id"`
	Grant    *struct {
		Mode string `json:"mode"`
	} `json:"grant"`
	Error      string `json:"error"`
	Throughput *struct {
		Upload *struct {
			ReceivedBytes int64 `json:"received_bytes"`
		} `json:"upload"`
	} `json:"throughput"`
}

// checkThroughput parses a `reflector test --json throughput` run and
// checks that bytes reached the reflector in the wanted mode.
func checkThroughput(t *testing.T, out, wantMode, wantID string) {
	t.Helper()
	var r testResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("reflector test --json: %v\n%s", err, out)
	}
	if r.Grant == nil || r.Grant.Mode != wantMode || r.ServerID != wantID || r.Throughput == nil || r.Throughput.Upload == nil ||
		r.Throughput.Upload.ReceivedBytes <= 0 {
		t.Fatalf("test against %s: want a %s grant and bytes received:\n%s", wantID, wantMode, out)
	}
}

// waitHealth polls the container's health status until it is want.
func waitHealth(t *testing.T, docker, ctr, want string, timeout time.Duration) {
	t.Helper()
	var last string
	testutil.Eventually(t, timeout, "container "+ctr+" health "+want, func() bool {
		out, _, _ := runCmd(docker, nil, "inspect", "-f", "{{.State.Health.Status}}", ctr)
		last = strings.TrimSpace(out)
		return last == want
	})
}

// waitStatus polls `reflector status` in the container until it exits 0.
func waitStatus(t *testing.T, docker, ctr string) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, "reflector status answers in "+ctr, func() bool {
		_, _, err := runCmd(docker, nil, "exec", ctr, "reflector", "status")
		return err == nil
	})
}

// pair opens a pairing window in the container and returns the token and
// the reflector's Endpoint ID, as DEPLOY.md shows.
func pair(t *testing.T, docker, ctr string) (token, id string) {
	t.Helper()
	out := must(t, docker, nil, "exec", ctr, "reflector", "pair", "--ttl", "2m")
	return field(t, out, "Token:"), field(t, out, "Endpoint ID:")
}

// TestDockerRun runs the image as DEPLOY.md does: read-only, non-root,
// every capability dropped, a named volume. A client on the host pairs and
// runs a test; show-id, status and audit work through `docker exec`; the
// health check turns healthy, and unhealthy once the audit log cannot be
// written; the Endpoint ID survives recreating the container.
func TestDockerRun(t *testing.T) {
	docker := requireDocker(t)
	img := dockerImage(t, docker)
	vol, name := uniq("reflector-data-test-"), uniq("reflector-test-")
	t.Cleanup(func() {
		_, _, _ = runCmd(docker, nil, "rm", "-f", name)
		_, _, _ = runCmd(docker, nil, "volume", "rm", "-f", vol)
	})
	start := func() {
		must(t, docker, nil, "run", "-d", "--name", name, "--read-only", "--cap-drop", "ALL",
			"--security-opt", "no-new-privileges", "--user", "65534:65534",
			"-p", "127.0.0.1::4000/tcp", "-p", "127.0.0.1::4000/udp", "-v", vol+":/var/lib/reflector",
			// The image's HEALTHCHECK command, probed every second here.
			"--health-interval", "1s", "--health-retries", "1", "--health-start-period", "0s",
			img)
	}
	start()
	waitHealth(t, docker, name, "healthy", 60*time.Second)
	id := strings.TrimSpace(must(t, docker, nil, "exec", name, "reflector", "show-id"))
	must(t, docker, nil, "exec", name, "reflector", "status")
	if user := strings.TrimSpace(must(t, docker, nil, "inspect", "-f", "{{.Config.User}}", name)); user != "65534:65534" {
		t.Errorf("container user %q", user)
	}
	labels := must(t, docker, nil, "inspect", "-f", `{{index .Config.Labels "org.opencontainers.image.version"}} {{index .Config.Labels "org.opencontainers.image.revision"}}`, img)
	if strings.TrimSpace(labels) != testutil.BinaryVersion+" deploytest" {
		t.Errorf("OCI version/revision labels %q, want the build args %s deploytest", labels, testutil.BinaryVersion)
	}

	// A client on the host pairs and runs a tunneled test.
	addr := strings.TrimSpace(must(t, docker, nil, "port", name, "4000/tcp"))
	token, pid := pair(t, docker, name)
	if pid != id {
		t.Fatalf("pair printed %s, show-id %s", pid, id)
	}
	bin := testutil.ReflectorBinary(t)
	key := filepath.Join(t.TempDir(), "client.ed25519")
	must(t, bin, nil, "pair-with", "--peer", addr, "--token", token, "--expect-id", id, "--identity", key)
	out := must(t, bin, nil, "test", "--peer", addr, "--identity", key, "--expect-id", id, "--json", "throughput", "-t", "1", "-P", "2")
	checkThroughput(t, out, "tunneled", id)
	out = must(t, docker, nil, "exec", name, "reflector", "audit", "--event", "session_completed", "--json")
	if !strings.Contains(out, `"session_completed"`) {
		t.Errorf("reflector audit --event session_completed --json shows no completed session:\n%s", out)
	}

	// self-test measures the audit log where it lives (the state volume):
	// a read-only scratch container has no /tmp.
	var rep struct {
		Checks []struct {
			Name, Value, Verdict, Hint string
		} `json:"checks"`
	}
	out, _, _ = runCmd(docker, nil, "exec", name, "reflector", "self-test", "--json", "--duration", "1s")
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("self-test --json in the container: %v\n%s", err, out)
	}
	found := false
	for _, c := range rep.Checks {
		if c.Name == "audit_write" {
			found = true
			if c.Value == "error" || strings.EqualFold(c.Verdict, "fail") {
				t.Errorf("self-test's audit check fails in a read-only container: %+v", c)
			}
		}
	}
	if !found {
		t.Errorf("self-test --json has no audit_write check:\n%s", out)
	}

	// The audit log made unwritable (a directory where the file was,
	// reopened on SIGHUP): status and the health check turn unhealthy.
	mnt := strings.TrimSpace(must(t, docker, nil, "volume", "inspect", "-f", "{{.Mountpoint}}", vol))
	auditPath := filepath.Join(mnt, "audit.jsonl")
	if err := os.Rename(auditPath, auditPath+".moved"); err != nil {
		t.Fatalf("the volume is not reachable from this host (%v): the unhealthy check needs it", err)
	}
	if err := os.Mkdir(auditPath, 0o700); err != nil {
		t.Fatal(err)
	}
	must(t, docker, nil, "kill", "-s", "HUP", name)
	var statusOut string
	testutil.Eventually(t, 10*time.Second, "status reports the audit failure", func() bool {
		o, e, _ := runCmd(docker, nil, "exec", name, "reflector", "status")
		statusOut = o + e
		return strings.Contains(strings.ToLower(statusOut), "audit")
	})
	if _, _, err := runCmd(docker, nil, "exec", name, "reflector", "status"); err == nil {
		t.Errorf("`reflector status` exits 0 with the audit log unwritable; it prints:\n%s", statusOut)
	}
	waitHealth(t, docker, name, "unhealthy", 30*time.Second)
	if err := os.Remove(auditPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(auditPath+".moved", auditPath); err != nil {
		t.Fatal(err)
	}

	// Same volume, new container: same Endpoint ID.
	must(t, docker, nil, "rm", "-f", name)
	start()
	waitStatus(t, docker, name)
	if again := strings.TrimSpace(must(t, docker, nil, "exec", name, "reflector", "show-id")); again != id {
		t.Errorf("Endpoint ID after recreating the container: %s, was %s", again, id)
	}
}

// composeProject is a copy of deploy's compose file(s) in a temporary
// directory, run under a unique project name.
type composeProject struct {
	t       *testing.T
	compose []string
	docker  string
	dir     string
	file    string
	name    string
	env     []string
}

// newCompose copies deploy/<file> and reflector.toml.example (as
// reflector.toml) into a temporary directory. Host ports are the only
// change: the machine is shared, so every published port becomes an
// ephemeral one on 127.0.0.1.
func newCompose(t *testing.T, file string) *composeProject {
	t.Helper()
	docker := requireDocker(t)
	compose := requireCompose(t, docker)
	img := dockerImage(t, docker)
	p := &composeProject{t: t, compose: compose, docker: docker, dir: t.TempDir(), file: filepath.Base(file), name: uniq("rfltest")}
	p.env = []string{"REFLECTOR_IMAGE=" + img}
	body := read(t, file)
	for _, port := range []string{"4000", "4001", "4002", "4003"} {
		for _, proto := range []string{"tcp", "udp"} {
			body = strings.ReplaceAll(body, fmt.Sprintf(`"%s:4000/%s"`, port, proto), fmt.Sprintf(`"127.0.0.1::4000/%s"`, proto))
		}
	}
	if err := os.WriteFile(filepath.Join(p.dir, p.file), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	p.writeConfig(read(t, "reflector.toml.example"))
	t.Cleanup(func() {
		_, _, _ = p.run("down", "-v", "--remove-orphans", "-t", "5")
		_, _, _ = runCmd(docker, nil, "volume", "rm", "-f", p.name+"_appliance")
	})
	return p
}

func (p *composeProject) writeConfig(body string) {
	p.t.Helper()
	// In place: the file is bind-mounted, a rename would not be seen.
	if err := os.WriteFile(filepath.Join(p.dir, "reflector.toml"), []byte(body), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *composeProject) run(args ...string) (string, string, error) {
	full := append(append([]string{}, p.compose[1:]...), append([]string{"-p", p.name, "-f", filepath.Join(p.dir, p.file)}, args...)...)
	return runCmd(p.compose[0], p.env, full...)
}

func (p *composeProject) must(args ...string) string {
	p.t.Helper()
	out, errs, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("compose %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

// container returns the container ID of a compose service.
func (p *composeProject) container(service string) string {
	p.t.Helper()
	id := strings.TrimSpace(p.must("ps", "-q", service))
	if id == "" {
		p.t.Fatalf("compose service %s has no container", service)
	}
	return id
}

// appliance runs the same image as an appliance on the project's network,
// its client key on the volume <project>_appliance.
func (p *composeProject) appliance(args ...string) (string, string, error) {
	full := append([]string{"run", "--rm", "--network", p.name + "_default", "--read-only", "--cap-drop", "ALL",
		"-v", p.name + "_appliance:/var/lib/reflector", imageTag}, args...)
	return runCmd(p.docker, nil, full...)
}

const applianceKey = "/var/lib/reflector/client.ed25519"

// pairAppliance pairs the appliance container with a compose service.
func (p *composeProject) pairAppliance(service string) (id string) {
	p.t.Helper()
	ctr := p.container(service)
	waitStatus(p.t, p.docker, ctr)
	token, id := pair(p.t, p.docker, ctr)
	if out, errs, err := p.appliance("pair-with", "--peer", service+":4000", "--token", token, "--expect-id", id, "--identity", applianceKey); err != nil {
		p.t.Fatalf("appliance pair-with %s: %v\n%s%s", service, err, out, errs)
	}
	return id
}

// applianceTest runs a short throughput test from the appliance.
func (p *composeProject) applianceTest(service, id string) (string, string, error) {
	return p.appliance("test", "--peer", service+":4000", "--identity", applianceKey, "--expect-id", id, "--json", "throughput", "-t", "1", "-P", "2")
}

// TestComposeUpAndAppliance brings deploy/docker-compose.yml up as written
// (image built locally) and has an appliance container pair with it and
// run a tunneled test, then a direct one after switching the mode.
func TestComposeUpAndAppliance(t *testing.T) {
	p := newCompose(t, "docker-compose.yml")
	p.must("up", "-d", "--no-build")
	id := p.pairAppliance("reflector")
	out, errs, err := p.applianceTest("reflector", id)
	if err != nil {
		t.Fatalf("tunneled test: %v\n%s%s", err, out, errs)
	}
	checkThroughput(t, out, "tunneled", id)

	cfg := strings.Replace(read(t, "reflector.toml.example"), `mode = "tunneled"`, `mode = "direct_ephemeral"`, 1)
	p.writeConfig(cfg)
	p.must("restart", "-t", "5", "reflector")
	waitStatus(t, p.docker, p.container("reflector"))
	out, errs, err = p.applianceTest("reflector", id)
	if err != nil {
		t.Fatalf("direct test: %v\n%s%s", err, out, errs)
	}
	checkThroughput(t, out, "direct_ephemeral", id)
	out = p.must("exec", "-T", "reflector", "reflector", "audit", "--event", "session_completed", "--json")
	if n := strings.Count(out, `"session_completed"`); n < 2 {
		t.Errorf("reflector audit shows %d completed sessions, want 2:\n%s", n, out)
	}
}

// TestComposeFleet runs deploy/docker-compose.fleet.yml: three reflectors,
// each with its own identity, and one appliance container that tests
// against all of them; with one stopped, only its test fails, naming it.
func TestComposeFleet(t *testing.T) {
	p := newCompose(t, "docker-compose.fleet.yml")
	p.must("up", "-d", "--no-build")
	services := []string{"reflector-1", "reflector-2", "reflector-3"}
	ids := map[string]string{}
	seen := map[string]bool{}
	for _, s := range services {
		ids[s] = p.pairAppliance(s)
		if seen[ids[s]] {
			t.Fatalf("%s has the Endpoint ID of another reflector: %s", s, ids[s])
		}
		seen[ids[s]] = true
	}
	for _, s := range services {
		out, errs, err := p.applianceTest(s, ids[s])
		if err != nil {
			t.Fatalf("test against %s: %v\n%s%s", s, err, out, errs)
		}
		checkThroughput(t, out, "tunneled", ids[s])
	}
	p.must("stop", "-t", "5", "reflector-2")
	for _, s := range services {
		out, errs, err := p.applianceTest(s, ids[s])
		switch {
		case s == "reflector-2" && err == nil:
			t.Errorf("test against the stopped %s succeeded:\n%s", s, out)
		case s == "reflector-2":
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !strings.Contains(out+errs, "reflector-2") {
				t.Errorf("the failure against the stopped reflector does not name it: %v\n%s%s", err, out, errs)
			}
			t.Logf("stopped %s: %s", s, strings.TrimSpace(errs+out))
		case err != nil:
			t.Errorf("test against %s failed while another reflector is stopped: %v\n%s%s", s, err, out, errs)
		default:
			checkThroughput(t, out, "tunneled", ids[s])
		}
	}
}

// containerCommand matches the reflector subcommands DEPLOY.md runs inside
// containers (podman/docker exec, compose exec, kubectl exec).
var containerCommand = regexp.MustCompile(`exec (?:-T )?\S+ (?:-- )?reflector ([a-z][a-z-]*)`)

// TestDeployGuideContainerCommands: every subcommand DEPLOY.md runs in a
// container exists in the binary (by name, on PATH, never /reflector);
// `audit` is helper operator's and only logged while it is missing.
func TestDeployGuideContainerCommands(t *testing.T) {
	guide := read(t, "DEPLOY.md")
	if strings.Contains(guide, " /reflector ") || strings.Contains(guide, `"/reflector"`) {
		t.Error("DEPLOY.md still runs /reflector: the binary is /usr/local/bin/reflector, on PATH")
	}
	bin := testutil.ReflectorBinary(t)
	seen := map[string]bool{}
	for _, m := range containerCommand.FindAllStringSubmatch(guide, -1) {
		cmd := m[1]
		if seen[cmd] {
			continue
		}
		seen[cmd] = true
		out, errs, _ := runCmd(bin, nil, cmd, "--help")
		if strings.Contains(out+errs, "unknown command") {
			t.Errorf("DEPLOY.md runs `reflector %s` in a container; the binary has no such command", cmd)
		}
	}
	for _, want := range []string{"show-id", "status", "pair", "audit"} {
		if !seen[want] {
			t.Errorf("DEPLOY.md never runs `reflector %s` in a container", want)
		}
	}
}
