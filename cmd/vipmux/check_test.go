package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/registry"
)

// checkFixture is a directory with a token file and a state file, and a
// config template pointing at them.
type checkFixture struct {
	dir, token, state string
	listen            string // a free loopback port
}

func newCheckFixture(t *testing.T) checkFixture {
	t.Helper()
	dir := t.TempDir()
	f := checkFixture{dir: dir, token: filepath.Join(dir, "token"), state: filepath.Join(dir, "state.json")}
	if err := os.WriteFile(f.token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.listen = ln.Addr().String()
	ln.Close()
	return f
}

// writeState saves a table of one mode-1 binding (ip, in network) to
// path, as serve would.
func writeState(t *testing.T, path, network, ip string) {
	t.Helper()
	store := &registry.FileStore{Path: path}
	reg, err := registry.New(registry.Options{Networks: []netip.Prefix{netip.MustParsePrefix(network)}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(registry.Registration{Name: "web-a", IP: netip.MustParseAddr(ip), Backend: netip.MustParseAddrPort("198.19.0.2:0")}); err != nil {
		t.Fatalf("register: %v", err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
}

// config returns a config that check passes as it stands (a tap device
// whose name is free, loopback listen, the fixture's files), with the
// replacements applied ("old", "new", ...) and extra appended.
func (f checkFixture) config(t *testing.T, extra string, replace ...string) string {
	t.Helper()
	text := fmt.Sprintf(`[nic]
driver = "tap"
interface = "vmxchk0"
networks = ["198.18.0.0/24"]

[control]
listen = %q
token_file = %q

[state]
path = %q
`, f.listen, f.token, f.state)
	text = strings.NewReplacer(replace...).Replace(text) + extra
	p := filepath.Join(f.dir, "vipmux.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheck runs vipmux check on configs with one or more problems and
// checks that each problem is listed, naming its key, and the exit status.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		replace []string
		state   string // "front" or "elsewhere": a state file with a binding in or outside nic.networks; other text is written as it is
		noToken bool   // remove the token file
		// wantErrs are the substrings of the error lines, one per
		// expected error; none means the check passes.
		wantErrs []string
	}{
		{name: "valid"},
		{name: "valid with a state file", state: "front"},
		{
			name:     "every bad key listed",
			replace:  []string{`driver = "tap"`, `driver = "tapp"`, `networks = ["198.18.0.0/24"]`, `networks = ["198.18.0.0/33"]`},
			extra:    "[dispatch]\nmax_in_flight = 0\n",
			wantErrs: []string{"nic.driver", "nic.networks", "dispatch.max_in_flight"},
		},
		{name: "syntax error", extra: "[log\n", wantErrs: []string{"line 13"}},
		{name: "corrupt state file", state: "{not json", wantErrs: []string{"state.path: STATE: restore table"}},
		{
			name:     "state outside the networks",
			state:    "elsewhere",
			wantErrs: []string{"state.path"},
		},
		{
			name:     "missing token, interface and listen address at once",
			noToken:  true,
			replace:  []string{`driver = "tap"`, `driver = "afpacket"`, `"vmxchk0"`, `"vmxnone0"`, `listen = "127.0.0.1:`, `listen = "198.18.255.254:`},
			wantErrs: []string{"control.token_file", "nic.interface: vmxnone0: no such interface", "control.listen: 198.18.255.254:"},
		},
		{name: "tap name taken by another interface", replace: []string{`"vmxchk0"`, `"lo"`}, wantErrs: []string{"nic.interface: an interface named lo ("}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCheckFixture(t)
			switch tc.state {
			case "":
			case "front":
				writeState(t, f.state, "198.18.0.0/24", "198.18.0.10")
			case "elsewhere":
				writeState(t, f.state, "203.0.113.0/24", "203.0.113.10")
			default:
				if err := os.WriteFile(f.state, []byte(tc.state), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.noToken {
				os.Remove(f.token)
			}
			p := f.config(t, tc.extra, tc.replace...)
			app := newApp()
			var out, errOut strings.Builder
			app.Writer, app.ErrWriter = &out, &errOut
			err := app.Run([]string{"vipmux", "check", "--config", p})
			var errLines []string
			for _, l := range strings.Split(strings.TrimSpace(errOut.String()), "\n") {
				if strings.HasPrefix(l, "error ") {
					errLines = append(errLines, l)
				}
			}
			if len(tc.wantErrs) == 0 {
				if err != nil || len(errLines) > 0 {
					t.Fatalf("vipmux check: %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
				}
				if !strings.Contains(out.String(), p+": configuration is valid") {
					t.Errorf("vipmux check stdout lacks %q:\n%s", p+": configuration is valid", &out)
				}
				return
			}
			if err == nil {
				t.Fatalf("vipmux check: nil error, want %d errors\nstdout:\n%s", len(tc.wantErrs), &out)
			}
			if want := fmt.Sprintf("%d error", len(tc.wantErrs)); !strings.Contains(err.Error(), want) {
				t.Errorf("vipmux check: %v, want %q in it\nstderr:\n%s", err, want, &errOut)
			}
			if len(errLines) != len(tc.wantErrs) {
				t.Errorf("vipmux check printed %d error lines, want %d:\n%s", len(errLines), len(tc.wantErrs), &errOut)
			}
			for _, w := range tc.wantErrs {
				w = strings.ReplaceAll(w, "STATE", f.state)
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("vipmux check stderr lacks %q:\n%s", w, &errOut)
				}
			}
		})
	}
}

// TestCheckMissingFile checks that a config file that cannot be read is
// an error naming it, exit status 1 (main's for any error).
func TestCheckMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "none.toml")
	out, err := runApp("check", "-c", p)
	if err == nil || !strings.Contains(out, "none.toml: no such file") {
		t.Errorf("vipmux check -c %s: %v, output %q; want an error naming the file", p, err, out)
	}
}
