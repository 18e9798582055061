package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/packetparamedic/reflector/internal/testutil"
)

// The image and package tests use testutil.ReflectorBinary (static, with
// testutil.BinaryVersion stamped in), removed at exit by testutil.Run; the
// test image is removed too.
func TestMain(m *testing.M) {
	code := testutil.Run(m)
	removeDockerImage()
	os.Exit(code)
}

// stageTree lays out, under a fresh directory, the files of the repository
// a build needs (everything under deploy/ that is not Go, and LICENSE) plus the binary
// at bin/reflector and an empty bin/state/reflector (0700), as `make` would.
func stageTree(t *testing.T, bin string) string {
	t.Helper()
	root := t.TempDir()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		dst := filepath.Join(root, "deploy", p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatalf("stage deploy/: %v", err)
	}
	lic, err := os.ReadFile("../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "LICENSE"), lic, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "bin", "state", "reflector"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "reflector"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// noUserNamespaceMarkers are what buildah prints when it cannot create the
// user namespace it needs as an unprivileged user (kernel or container
// sandbox without unprivileged user namespaces, no subuid range).
var noUserNamespaceMarkers = []string{
	"cannot clone: Operation not permitted",
	"user namespaces are not enabled",
	"cannot find mappings for user",
	"newuidmap",
	"there might not be enough IDs available in the namespace",
}

func TestImageBuildLocal(t *testing.T) {
	testutil.SkipIfShort(t, "builds a container image")
	buildah := testutil.LookBinary(t, "buildah")
	root := stageTree(t, testutil.ReflectorBinary(t))
	store := t.TempDir()
	args := func(a ...string) []string {
		return append([]string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}, a...)
	}
	run := func(a ...string) (string, error) {
		cmd := exec.Command(buildah, args(a...)...)
		cmd.Dir = root
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err != nil {
			return out.String(), &buildahError{args: a, err: err, stderr: errb.String()}
		}
		return out.String(), nil
	}
	t.Cleanup(func() {
		// vfs layers hold files owned by 65534 (and, rootless, by sub-IDs):
		// let buildah remove its own storage.
		_, _ = run("rmi", "--all", "--force")
		if os.Geteuid() != 0 {
			_ = exec.Command(buildah, "unshare", "rm", "-rf", store).Run()
		}
	})
	const tag = "localhost/reflector-deploytest:latest"
	if _, err := run("bud", "--format", "docker", "--quiet", "-f", "deploy/container/Containerfile.local", "-t", tag, "."); err != nil {
		var be *buildahError
		if errors.As(err, &be) && slices.ContainsFunc(noUserNamespaceMarkers, func(m string) bool { return strings.Contains(be.stderr, m) }) {
			t.Skipf("IMAGE BUILD NOT RUN: buildah cannot create a user namespace here (unprivileged user without "+
				"user namespaces or subuid/subgid ranges); run as root or enable user namespaces. buildah said:\n%s", be.stderr)
		}
		t.Fatal(err)
	}
	out, err := run("inspect", "--type", "image", tag)
	if err != nil {
		t.Fatal(err)
	}
	var img struct {
		Docker struct {
			Config struct {
				User         string
				Entrypoint   []string
				Cmd          []string
				ExposedPorts map[string]struct{}
				Volumes      map[string]struct{}
				Healthcheck  *struct{ Test []string }
			} `json:"config"`
		} `json:"Docker"`
	}
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatalf("buildah inspect output: %v", err)
	}
	c := img.Docker.Config
	if c.User != "65534:65534" {
		t.Errorf("user %q, want 65534:65534", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/reflector"}) || !slices.Equal(c.Cmd, []string{"serve"}) {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	ports := map[string]bool{}
	for p := range c.ExposedPorts {
		ports[p] = true
	}
	for _, p := range []string{"4000/tcp", "4000/udp", "5201-5210/tcp", "5201-5210/udp"} {
		// Docker expands port ranges into single ports, buildah keeps them.
		if !ports[p] && !(strings.HasPrefix(p, "5201-") && ports["5201/"+p[len(p)-3:]] && ports["5210/"+p[len(p)-3:]]) {
			t.Errorf("exposed ports %v lack %s", ports, p)
		}
	}
	if _, ok := c.Volumes["/var/lib/reflector"]; !ok || len(c.Volumes) != 1 {
		t.Errorf("volumes %v, want /var/lib/reflector", c.Volumes)
	}
	if c.Healthcheck == nil || !slices.Equal(c.Healthcheck.Test, []string{"CMD", "/usr/local/bin/reflector", "status"}) {
		t.Errorf("healthcheck %+v, want CMD /usr/local/bin/reflector status", c.Healthcheck)
	}
	t.Run("docker-archive keeps name and health check", func(t *testing.T) {
		// DEPLOY.md's registry-free transfer (make image-archive).
		docker := requireDocker(t)
		archive := filepath.Join(t.TempDir(), "reflector-image.tar")
		if _, err := run("push", tag, "docker-archive:"+archive+":"+tag); err != nil {
			t.Fatal(err)
		}
		out := must(t, docker, nil, "load", "-i", archive)
		t.Cleanup(func() { _, _, _ = runCmd(docker, nil, "rmi", "-f", tag) })
		if !strings.Contains(out, tag) {
			t.Errorf("docker load did not restore the name %s: %s", tag, out)
		}
		hc := must(t, docker, nil, "inspect", "-f", "{{json .Config.Healthcheck.Test}}", tag)
		if strings.TrimSpace(hc) != `["CMD","/usr/local/bin/reflector","status"]` {
			t.Errorf("loaded image health check %s", hc)
		}
	})
	if os.Geteuid() != 0 {
		t.Log("not root: the image's file tree is not inspected (buildah mount needs root)")
		return
	}
	ctr, err := run("from", "--pull-never", tag)
	if err != nil {
		t.Fatal(err)
	}
	ctr = strings.TrimSpace(ctr)
	mnt, err := run("mount", ctr)
	if err != nil {
		t.Fatal(err)
	}
	mnt = strings.TrimSpace(mnt)
	defer func() {
		_, _ = run("umount", ctr)
		_, _ = run("rm", ctr)
	}()
	var files []string
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if !d.IsDir() {
			files = append(files, "/"+rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	if want := []string{"/etc/reflector/reflector.toml", "/usr/local/bin/reflector"}; !slices.Equal(files, want) {
		t.Errorf("image files %v, want only %v", files, want)
	}
	fi, err := os.Stat(filepath.Join(mnt, "var/lib/reflector"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/reflector: dir %v owner %d:%d mode %v, want a directory owned by 65534:65534, 0700", fi.IsDir(), st.Uid, st.Gid, fi.Mode().Perm())
	}
	if st := mustStat(t, filepath.Join(mnt, "var")); st.Uid != 0 {
		t.Errorf("/var owned by %d, want root", st.Uid)
	}
}

func mustStat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// buildahError is a failed buildah command with its stderr.
type buildahError struct {
	args   []string
	err    error
	stderr string
}

func (e *buildahError) Error() string {
	return "buildah " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.stderr
}

func (e *buildahError) Unwrap() error { return e.err }
