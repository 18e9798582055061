package deploy_test

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/packetparamedic/reflector/controlplane/config"
)

// Values every deployment file must agree on.
const (
	runUID       = 65534
	stateDir     = "/var/lib/reflector"
	configPath   = "/etc/reflector/reflector.toml"
	k8sMetricsPt = 9477
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// defaults returns the control port and the data range of the built-in
// configuration, which the files must match.
func defaults(t *testing.T) (ctrl, lo, hi int) {
	t.Helper()
	d := config.Default()
	_, p, err := net.SplitHostPort(d.Network.ListenAddress)
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err = strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return ctrl, d.Network.DataPortRangeStart, d.Network.DataPortRangeEnd
}

func TestExampleConfigParsesToDefaults(t *testing.T) {
	c, err := config.LoadFile("reflector.toml.example")
	if err != nil {
		t.Fatalf("the example configuration does not parse: %v", err)
	}
	if w := c.Warnings(); len(w) > 0 {
		t.Errorf("the example configuration draws warnings: %q", w)
	}
	if got, want := c.TOML(), config.Default().TOML(); got != want {
		t.Errorf("the example configuration differs from the built-in defaults:\n--- example\n%s\n--- defaults\n%s", got, want)
	}
	if c.Network.Mode != config.ModeTunneled || c.State.Dir != stateDir {
		t.Errorf("example: mode %q, state dir %q", c.Network.Mode, c.State.Dir)
	}
	// Every key of the schema is mentioned, set or commented out.
	text := read(t, "reflector.toml.example")
	section := ""
	for line := range strings.Lines(config.Default().TOML()) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "["):
			section = line
			if !strings.Contains(text, "\n"+section+"\n") {
				t.Errorf("example lacks section %s", section)
			}
		case strings.Contains(line, " = "):
			key := strings.SplitN(line, " = ", 2)[0]
			re := regexp.MustCompile(`(?m)^(# )?` + regexp.QuoteMeta(key) + ` = `)
			if !re.MatchString(text) {
				t.Errorf("example lacks key %s in %s", key, section)
			}
		}
	}
}

// composeFile is the part of docker-compose.yml under test.
type composeFile struct {
	Services map[string]struct {
		Image       string   `yaml:"image"`
		Command     []string `yaml:"command"`
		User        string   `yaml:"user"`
		ReadOnly    bool     `yaml:"read_only"`
		CapDrop     []string `yaml:"cap_drop"`
		SecurityOpt []string `yaml:"security_opt"`
		Ports       []string `yaml:"ports"`
		Volumes     []string `yaml:"volumes"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		MemLimit string   `yaml:"mem_limit"`
		Tmpfs    []string `yaml:"tmpfs"`
		Build    struct {
			Args map[string]string `yaml:"args"`
		} `yaml:"build"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestComposeSecurityAndPorts(t *testing.T) {
	ctrl, _, _ := defaults(t)
	var cf composeFile
	if err := yaml.Unmarshal([]byte(read(t, "docker-compose.yml")), &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	s, ok := cf.Services["reflector"]
	if !ok {
		t.Fatal("docker-compose.yml has no reflector service")
	}
	if s.User != fmt.Sprintf("%d:%d", runUID, runUID) || !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) ||
		!slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("compose security: user %q read_only %v cap_drop %v security_opt %v", s.User, s.ReadOnly, s.CapDrop, s.SecurityOpt)
	}
	for _, proto := range []string{"tcp", "udp"} {
		want := fmt.Sprintf("%d:%d/%s", ctrl, ctrl, proto)
		if !slices.Contains(s.Ports, want) {
			t.Errorf("compose ports %v lack %s", s.Ports, want)
		}
	}
	if !slices.Contains(s.Volumes, "reflector-data:"+stateDir) || !slices.Contains(s.Volumes, "./reflector.toml:"+configPath+":ro") {
		t.Errorf("compose volumes %v: want the state volume and the config read-only", s.Volumes)
	}
	if _, ok := cf.Volumes["reflector-data"]; !ok {
		t.Error("compose does not declare the reflector-data volume (the guide's name)")
	}
	if s.MemLimit == "" || !slices.ContainsFunc(s.Tmpfs, func(m string) bool { return strings.HasPrefix(m, "/tmp") }) ||
		s.Build.Args["VERSION"] == "" || s.Build.Args["COMMIT"] == "" {
		t.Errorf("compose: mem_limit %q, tmpfs %v, build args %v: want a memory limit, a /tmp tmpfs, VERSION and COMMIT", s.MemLimit, s.Tmpfs, s.Build.Args)
	}
	if !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/usr/local/bin/reflector", "status"}) || !slices.Equal(s.Command, []string{"serve"}) {
		t.Errorf("compose healthcheck %v command %v", s.Healthcheck.Test, s.Command)
	}
}

// directives reads KEY=VALUE lines of a systemd-style file (repeated keys
// collect every value).
func directives(t *testing.T, path string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(read(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not KEY=VALUE: %q", path, line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

func TestSystemdUnitHardening(t *testing.T) {
	d := directives(t, "systemd/reflector.service")
	want := map[string]string{
		"User": "reflector", "Group": "reflector", "DynamicUser": "no",
		"StateDirectory": "reflector", "StateDirectoryMode": "0750",
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
		"CapabilityBoundingSet": "", "AmbientCapabilities": "",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
		"ExecReload":              "/bin/kill -HUP $MAINPID",
		"ExecStart":               "/usr/bin/reflector serve",
		"Environment":             "REFLECTOR_CONFIG=" + configPath,
	}
	for k, v := range want {
		if got, ok := d[k]; !ok || !slices.Contains(got, v) {
			t.Errorf("reflector.service: %s=%q, want %q", k, got, v)
		}
	}
	if !slices.Contains(d["SystemCallFilter"], "@system-service") {
		t.Errorf("reflector.service: SystemCallFilter %q lacks @system-service", d["SystemCallFilter"])
	}
	if _, ok := d["ProtectClock"]; ok {
		t.Error("reflector.service: ProtectClock= blocks the read-only adjtimex behind time_synced")
	}
}

func TestQuadlet(t *testing.T) {
	ctrl, _, _ := defaults(t)
	c := directives(t, "quadlet/reflector.container")
	want := map[string]string{
		"User": strconv.Itoa(runUID), "Group": strconv.Itoa(runUID), "ReadOnly": "true",
		"DropCapability": "ALL", "NoNewPrivileges": "true", "Exec": "serve",
		"HealthCmd": "/usr/local/bin/reflector status", "HealthOnFailure": "kill", "AutoUpdate": "local",
	}
	for k, v := range want {
		if got := c[k]; !slices.Contains(got, v) {
			t.Errorf("reflector.container: %s=%q, want %q", k, got, v)
		}
	}
	for _, v := range []string{"reflector.volume:" + stateDir, configPath + ":" + configPath + ":ro,Z"} {
		if !slices.Contains(c["Volume"], v) {
			t.Errorf("reflector.container: Volume=%q lacks %q", c["Volume"], v)
		}
	}
	for _, proto := range []string{"tcp", "udp"} {
		if v := fmt.Sprintf("%d:%d/%s", ctrl, ctrl, proto); !slices.Contains(c["PublishPort"], v) {
			t.Errorf("reflector.container: PublishPort=%q lacks %s", c["PublishPort"], v)
		}
	}
	v := directives(t, "quadlet/reflector.volume")
	if !slices.Equal(v["VolumeName"], []string{"reflector-data"}) {
		t.Errorf("reflector.volume: VolumeName=%q", v["VolumeName"])
	}
}

// containerfileFinal returns the lines from "FROM scratch" on, without
// comments and blank lines.
func containerfileFinal(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	in := false
	for line := range strings.Lines(read(t, path)) {
		line = strings.TrimSpace(line)
		if line == "FROM scratch" {
			in = true
		}
		if in && line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no FROM scratch stage", path)
	}
	return out
}

func TestContainerfiles(t *testing.T) {
	ctrl, lo, hi := defaults(t)
	full := containerfileFinal(t, "../Containerfile")
	local := containerfileFinal(t, "container/Containerfile.local")
	// The local file takes the binary and the empty state dir from the
	// build context instead of the builder stage; all else is identical.
	sub := strings.NewReplacer("--from=build /out/bin/reflector", "bin/reflector", "--from=build /out/state/", "bin/state/",
		"--from=build --chown=65534:65534 /out/state/", "--chown=65534:65534 bin/state/")
	for i := range full {
		full[i] = sub.Replace(full[i])
	}
	if !slices.Equal(full, local) {
		t.Errorf("final stages differ:\nContainerfile:\n%s\nContainerfile.local:\n%s", strings.Join(full, "\n"), strings.Join(local, "\n"))
	}
	expose := fmt.Sprintf("EXPOSE %d/tcp %d/udp %d-%d/tcp %d-%d/udp", ctrl, ctrl, lo, hi, lo, hi)
	for _, want := range []string{
		"USER 65534:65534", `VOLUME ["` + stateDir + `"]`, expose,
		`ENTRYPOINT ["/usr/local/bin/reflector"]`, `CMD ["serve"]`, "ENV PATH=/usr/local/bin",
		"ARG VERSION=dev", "ARG COMMIT=unknown",
		"COPY deploy/reflector.toml.example " + configPath,
	} {
		if !slices.Contains(local, want) {
			t.Errorf("final stage lacks %q", want)
		}
	}
	if !slices.ContainsFunc(local, func(l string) bool {
		return strings.HasPrefix(l, "HEALTHCHECK ") && strings.HasSuffix(l, `CMD ["/usr/local/bin/reflector", "status"]`)
	}) {
		t.Error(`final stage lacks HEALTHCHECK ... CMD ["/usr/local/bin/reflector", "status"]`)
	}
	for _, label := range []string{"title", "description", "source", "licenses", "version", "revision"} {
		if !slices.ContainsFunc(local, func(l string) bool { return strings.Contains(l, "org.opencontainers.image."+label+"=") }) {
			t.Errorf("final stage lacks the OCI label org.opencontainers.image.%s", label)
		}
	}
	if !slices.ContainsFunc(local, func(l string) bool { return strings.Contains(l, `licenses="BlueOak-1.0.0"`) }) {
		t.Error("image license label differs from the LICENSE file (BlueOak-1.0.0)")
	}
	src := read(t, "../Containerfile")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "ARG VERSION", "ARG COMMIT", "golang:1.26"} {
		if !strings.Contains(src, want) {
			t.Errorf("Containerfile builder lacks %q", want)
		}
	}
}

func TestFirewalld(t *testing.T) {
	ctrl, lo, hi := defaults(t)
	type svc struct {
		Ports []struct {
			Protocol string `xml:"protocol,attr"`
			Port     string `xml:"port,attr"`
		} `xml:"port"`
		Include []struct {
			Service string `xml:"service,attr"`
		} `xml:"include"`
	}
	load := func(path string) map[string]bool {
		var s svc
		if err := xml.Unmarshal([]byte(read(t, path)), &s); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		m := map[string]bool{}
		for _, p := range s.Ports {
			m[p.Port+"/"+p.Protocol] = true
		}
		for _, i := range s.Include {
			m["include:"+i.Service] = true
		}
		return m
	}
	tun := load("firewalld/reflector.xml")
	if len(tun) != 2 || !tun[fmt.Sprintf("%d/tcp", ctrl)] || !tun[fmt.Sprintf("%d/udp", ctrl)] {
		t.Errorf("reflector.xml opens %v; want exactly %d/tcp and %d/udp", tun, ctrl, ctrl)
	}
	dir := load("firewalld/reflector-direct.xml")
	for _, want := range []string{fmt.Sprintf("%d-%d/tcp", lo, hi), fmt.Sprintf("%d-%d/udp", lo, hi), "include:reflector"} {
		if !dir[want] {
			t.Errorf("reflector-direct.xml lacks %s: %v", want, dir)
		}
	}
}

func TestLogrotateAndPackagingScripts(t *testing.T) {
	lr := read(t, "logrotate/reflector")
	c := config.Default()
	for _, want := range []string{c.Logging.AuditLogPath + " {", "create 0600 reflector reflector", "systemctl reload reflector.service"} {
		if !strings.Contains(lr, want) {
			t.Errorf("logrotate/reflector lacks %q", want)
		}
	}
	post := read(t, "packaging/postinstall.sh")
	for _, want := range []string{"useradd --system", "install -d -m 0750 -o reflector -g reflector " + stateDir} {
		if !strings.Contains(post, want) {
			t.Errorf("postinstall.sh lacks %q", want)
		}
	}
	if !strings.Contains(read(t, "packaging/preremove.sh"), "systemctl disable --now reflector.service") {
		t.Error("preremove.sh does not stop the unit")
	}
	for _, f := range []string{"packaging/postinstall.sh", "packaging/preremove.sh", "packaging/postremove.sh"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s must exist and be executable", f)
		}
	}
}
