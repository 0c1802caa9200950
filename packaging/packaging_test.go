// Package packaging holds what `make install` puts on a host besides the
// binary: the systemd unit vipmux.service and the sysusers.d entry of its
// user. It has no Go code; its tests check the unit's settings, run
// `make install` and `make uninstall` into a scratch DESTDIR, and have
// systemd-analyze verify the installed unit where it exists.
package packaging

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vipmux/vipmux/config"
)

// unit is a parsed systemd unit file: section → key → values, in order
// (a key may be given more than once).
type unit map[string]map[string][]string

// parseUnit reads a unit file the way systemd does for the settings used
// here: [Section] headers, Key=Value lines, # and ; comments.
func parseUnit(t *testing.T, data []byte) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("vipmux.service:%d: %q is not Key=Value in a section", n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// one returns the single value of section.key, failing when it is absent
// or given more than once.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Errorf("[%s] %s: %d values %q, want exactly one", section, key, len(vs), vs)
		return ""
	}
	return vs[0]
}

func readUnit(t *testing.T) unit {
	t.Helper()
	data, err := os.ReadFile("vipmux.service")
	if err != nil {
		t.Fatal(err)
	}
	return parseUnit(t, data)
}

// TestUnit checks the settings that make vipmux.service a non-root daemon
// with exactly CAP_NET_RAW and CAP_NET_ADMIN, and that the config's state
// path lies in its StateDirectory.
func TestUnit(t *testing.T) {
	u := readUnit(t)
	for _, tc := range []struct{ section, key, want string }{
		{"Service", "ExecStart", "/usr/local/bin/vipmux serve --config /etc/vipmux/vipmux.toml"},
		{"Service", "ExecStartPre", "/usr/local/bin/vipmux check --quiet --config /etc/vipmux/vipmux.toml"},
		{"Service", "Restart", "on-failure"},
		// READY=1 once serving, STOPPING=1, RELOADING=1 (issue 15 point 2).
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "User", "vipmux"},
		{"Service", "Group", "vipmux"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "StateDirectory", "vipmux"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "DeviceAllow", "/dev/net/tun rw"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := u.one(t, tc.section, tc.key); got != tc.want {
			t.Errorf("[%s] %s = %q, want %q", tc.section, tc.key, got, tc.want)
		}
	}
	// A reload checks the file first: a bad one fails systemctl reload
	// before the gateway is asked; then vipmux reload asks it through the
	// API and exits 1 when it refuses, which a SIGHUP could not report.
	wantReload := []string{"/usr/local/bin/vipmux check --quiet --config /etc/vipmux/vipmux.toml", "/usr/local/bin/vipmux reload --config /etc/vipmux/vipmux.toml"}
	if diff := cmp.Diff(wantReload, u["Service"]["ExecReload"]); diff != "" {
		t.Errorf("[Service] ExecReload (-want +got):\n%s", diff)
	}
	wantCaps := []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		caps := strings.Fields(u.one(t, "Service", key))
		slices.Sort(caps)
		if diff := cmp.Diff(wantCaps, caps); diff != "" {
			t.Errorf("[Service] %s (-want +got):\n%s", key, diff)
		}
	}
	// Settings that would break serve: it must write /proc/sys/net, open
	// /dev/net/tun, see the host's interfaces, and not run as root.
	for _, bad := range []struct{ key, value string }{
		{"ProtectKernelTunables", "yes"},
		{"PrivateDevices", "yes"},
		{"PrivateNetwork", "yes"},
		{"ProcSubset", "pid"},
		{"User", "root"},
	} {
		if slices.Contains(u["Service"][bad.key], bad.value) {
			t.Errorf("[Service] %s=%s would keep serve from working", bad.key, bad.value)
		}
	}
	if got, want := filepath.Dir(config.Default().State.Path), "/var/lib/"+u.one(t, "Service", "StateDirectory"); got != want {
		t.Errorf("config's default state.path %s lies in %s, want the unit's StateDirectory %s", config.Default().State.Path, got, want)
	}
	example, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := `# path = "` + config.Default().State.Path + `"`; !strings.Contains(string(example), want) {
		t.Errorf("config.example.toml lacks %q (the default state path, in the unit's StateDirectory)", want)
	}
	sysusers, err := os.ReadFile("vipmux.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	if !hasLine(string(sysusers), `u vipmux - "vipmux gateway" /var/lib/vipmux`) {
		t.Errorf("vipmux.sysusers does not create the user vipmux:\n%s", sysusers)
	}
}

// hasLine reports whether text has a line equal to line.
func hasLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}

// requireTool skips (fails with CI=true) without a command.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing; CI=true, so this is a failure, not a skip", name)
		}
		t.Skipf("%s is missing", name)
	}
	return p
}

// makeTarget runs make in the repository root with the binary bin as
// bin/vipmux (-o build: it is not rebuilt) and returns its output.
func makeTarget(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-o", "build", "BIN=" + bin}, args...)...)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestInstall runs make install into a scratch DESTDIR, twice (the second
// keeps a changed config), checks every file, has systemd-analyze verify
// the installed unit, and runs make uninstall.
func TestInstall(t *testing.T) {
	requireTool(t, "make")
	dir := t.TempDir()
	bin := filepath.Join(dir, "build", "vipmux")
	build := exec.Command("go", "build", "-o", bin, "./cmd/vipmux")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		prefix  string
		binDir  string // where the unit's ExecStart must point
		unitDir string
	}{
		{"/usr/local", "/usr/local/bin", "/usr/local/lib/systemd/system"},
		{"/usr", "/usr/bin", "/usr/lib/systemd/system"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			dest := filepath.Join(dir, "root"+strings.ReplaceAll(tc.prefix, "/", "-"))
			out := makeTarget(t, bin, "install", "DESTDIR="+dest, "PREFIX="+tc.prefix)
			share := tc.prefix + "/share"
			files := map[string]os.FileMode{
				tc.binDir + "/vipmux":                            0o755,
				tc.unitDir + "/vipmux.service":                   0o644,
				tc.prefix + "/lib/sysusers.d/vipmux.conf":        0o644,
				share + "/man/man8/vipmux.8":                     0o644,
				share + "/man/man5/vipmux.toml.5":                0o644,
				share + "/doc/vipmux/config.example.toml":        0o644,
				share + "/bash-completion/completions/vipmux":    0o644,
				share + "/zsh/site-functions/_vipmux":            0o644,
				share + "/fish/vendor_completions.d/vipmux.fish": 0o644,
				"/etc/vipmux/vipmux.toml":                        0o644,
			}
			for f, mode := range files {
				fi, err := os.Stat(dest + f)
				switch {
				case err != nil:
					t.Errorf("make install: %v", err)
				case fi.Mode().Perm() != mode || fi.Size() == 0:
					t.Errorf("make install: %s has mode %v, size %d; want %v, not empty", f, fi.Mode().Perm(), fi.Size(), mode)
				}
			}
			unitData, err := os.ReadFile(dest + tc.unitDir + "/vipmux.service")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := parseUnit(t, unitData).one(t, "Service", "ExecStart"), tc.binDir+"/vipmux serve --config /etc/vipmux/vipmux.toml"; got != want {
				t.Errorf("installed unit: ExecStart = %q, want %q", got, want)
			}
			if got, want := parseUnit(t, unitData).one(t, "Service", "ExecStartPre"), tc.binDir+"/vipmux check --quiet --config /etc/vipmux/vipmux.toml"; got != want {
				t.Errorf("installed unit: ExecStartPre = %q, want %q", got, want)
			}
			example, _ := os.ReadFile("../config.example.toml")
			if got, _ := os.ReadFile(dest + "/etc/vipmux/vipmux.toml"); !bytes.Equal(got, example) {
				t.Errorf("installed /etc/vipmux/vipmux.toml differs from config.example.toml")
			}
			if !strings.Contains(out, "installed "+dest+"/etc/vipmux/vipmux.toml") {
				t.Errorf("make install did not say it installed the config:\n%s", out)
			}
			if man, _ := os.ReadFile(dest + share + "/man/man8/vipmux.8"); !bytes.HasPrefix(man, []byte(".TH VIPMUX 8")) {
				t.Errorf("installed man page does not start with .TH VIPMUX 8: %.80q", man)
			}
			verifyUnit(t, unitData, tc.binDir+"/vipmux", dest+tc.binDir+"/vipmux")

			// An operator's config survives a second install.
			mine := []byte("# the operator's own\n")
			if err := os.WriteFile(dest+"/etc/vipmux/vipmux.toml", mine, 0o600); err != nil {
				t.Fatal(err)
			}
			out = makeTarget(t, bin, "install", "DESTDIR="+dest, "PREFIX="+tc.prefix)
			if got, _ := os.ReadFile(dest + "/etc/vipmux/vipmux.toml"); !bytes.Equal(got, mine) {
				t.Errorf("second make install replaced the operator's config with %.60q", got)
			}
			if !strings.Contains(out, "kept "+dest+"/etc/vipmux/vipmux.toml") {
				t.Errorf("second make install did not say it kept the config:\n%s", out)
			}

			makeTarget(t, bin, "uninstall", "DESTDIR="+dest, "PREFIX="+tc.prefix)
			for f := range files {
				_, err := os.Stat(dest + f)
				switch {
				case f == "/etc/vipmux/vipmux.toml" && err != nil:
					t.Errorf("make uninstall removed the operator's config: %v", err)
				case f != "/etc/vipmux/vipmux.toml" && !os.IsNotExist(err):
					t.Errorf("make uninstall left %s (stat: %v)", f, err)
				}
			}
		})
	}
}

// verifyUnit has systemd-analyze verify the installed unit (with ExecStart
// pointing at the installed binary inside DESTDIR, which is where it
// exists here); any complaint fails the test. A deliberately broken copy
// must draw a complaint, so that a silent verifier cannot pass it.
func verifyUnit(t *testing.T, unitData []byte, execPath, realPath string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("no systemd-analyze: the unit was checked by TestUnit only")
		return
	}
	verify := func(name string, data []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, bytes.ReplaceAll(data, []byte(execPath+" "), []byte(realPath+" ")), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", "--man=no", p).CombinedOutput()
		if err != nil && len(out) == 0 {
			out = []byte(err.Error())
		}
		return string(out)
	}
	if out := verify("vipmux.service", unitData); out != "" {
		t.Errorf("systemd-analyze verify vipmux.service:\n%s", out)
	}
	broken := bytes.Replace(unitData, []byte("ProtectSystem=strict"), []byte("ProtectSystem=strictly"), 1)
	if out := verify("vipmux.service", broken); !strings.Contains(out, "strictly") {
		t.Errorf("systemd-analyze verify did not complain about ProtectSystem=strictly: %q", out)
	}
}

// TestDeb builds the Debian package (make deb, nfpm), checks its control
// data and contents (the conffile included), unpacks it into a throw-away
// root and runs the binary inside.
func TestDeb(t *testing.T) {
	requireTool(t, "make")
	dpkgDeb := requireTool(t, "dpkg-deb")
	dir := t.TempDir()
	bin := filepath.Join(dir, "build", "vipmux")
	build := exec.Command("go", "build", "-o", bin, "./cmd/vipmux")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	makeTarget(t, bin, "deb", "DEB_ROOT="+filepath.Join(dir, "root"), "DEB_DIR="+dir, "DEB_VERSION=1.2.3")
	debs, _ := filepath.Glob(filepath.Join(dir, "vipmux_1.2.3_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s, want one vipmux_1.2.3_ARCH.deb", debs, dir)
	}
	deb := debs[0]
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(dpkgDeb, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for field, want := range map[string]string{"Package": "vipmux", "Version": "1.2.3", "Section": "net"} {
		if got := strings.TrimSpace(run("--field", deb, field)); got != want {
			t.Errorf("control field %s = %q, want %q", field, got, want)
		}
	}
	contents := run("--contents", deb)
	for _, f := range []string{
		"./usr/bin/vipmux", "./usr/lib/systemd/system/vipmux.service", "./usr/lib/sysusers.d/vipmux.conf",
		"./usr/share/man/man8/vipmux.8", "./usr/share/man/man5/vipmux.toml.5", "./usr/share/doc/vipmux/config.example.toml",
		"./usr/share/bash-completion/completions/vipmux", "./usr/share/zsh/site-functions/_vipmux",
		"./usr/share/fish/vendor_completions.d/vipmux.fish", "./etc/vipmux/vipmux.toml",
	} {
		if !strings.Contains(contents, f+"\n") {
			t.Errorf("package lacks %s; contents:\n%s", f, contents)
		}
	}
	ctl := filepath.Join(dir, "control")
	run("--control", deb, ctl)
	if conf, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); !strings.Contains(string(conf), "/etc/vipmux/vipmux.toml") {
		t.Errorf("conffiles = %q, want /etc/vipmux/vipmux.toml (dpkg keeps an operator's edits)", conf)
	}
	if _, err := os.Stat(filepath.Join(ctl, "postinst")); err != nil {
		t.Errorf("package has no postinst (the system user): %v", err)
	}
	root := filepath.Join(dir, "unpacked")
	run("-x", deb, root)
	out, err := exec.Command(filepath.Join(root, "usr/bin/vipmux"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "vipmux") {
		t.Errorf("the packaged vipmux version: %v\n%s", err, out)
	}
	unitData, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/vipmux.service"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseUnit(t, unitData).one(t, "Service", "ExecStart"), "/usr/bin/vipmux serve --config /etc/vipmux/vipmux.toml"; got != want {
		t.Errorf("packaged unit: ExecStart = %q, want %q", got, want)
	}
}

// TestNoEtcdServerInBinary: the binary links etcd's client only; the
// server (embedded etcd, internal/etcdtest) is for tests.
func TestNoEtcdServerInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/vipmux/vipmux/cmd/vipmux").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "go.etcd.io/etcd/server/") || strings.HasSuffix(pkg, "/internal/etcdtest") {
			t.Errorf("cmd/vipmux links %s", pkg)
		}
	}
	if !strings.Contains(string(out), "go.etcd.io/etcd/client/v3\n") {
		t.Errorf("cmd/vipmux does not link go.etcd.io/etcd/client/v3: is this test still looking at the right thing?")
	}
}
