package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCheckConfig runs vipmux check on the real binary in a gateway
// namespace (issue 15, point 1): a good config passes (exit 0) with the
// front interface found; bad keys, a missing interface and token file, and
// a corrupt state file each fail (exit 1) with every problem named; and
// with the gateway running (a check before a reload) the good config
// still passes.
func TestCheckConfig(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Token: "check-token"})
	tp.TokenFile()
	good := tp.WriteConfig("good.toml", tp.Config())
	check := func(path string) (string, string, int) {
		return tp.CLI(nil, "check", "--config", path)
	}

	out, errOut, code := check(good)
	if code != 0 || !strings.Contains(out, "nic.interface: f0 exists") || !strings.Contains(out, good+": configuration is valid") {
		t.Fatalf("vipmux check --config good.toml: exit %d, want 0 with f0 found\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	for _, tc := range []struct {
		name     string
		config   string
		state    string // written to the state file first, when not empty
		wantErrs []string
	}{
		{
			name:     "bad keys",
			config:   strings.Replace(tp.Config(), `driver = "afpacket"`, `driver = "afpaket"`, 1) + "\n[dispatch]\ndial_timeout = \"3\"\n",
			wantErrs: []string{"nic.driver", "dispatch.dial_timeout"},
		},
		{
			name:     "no interface, no token file",
			config:   strings.NewReplacer(`interface = "f0"`, `interface = "f9"`, tp.TokenFile(), tp.TokenFile()+".gone").Replace(tp.Config()),
			wantErrs: []string{"nic.interface: f9: no such interface", "control.token_file: " + tp.TokenFile() + ".gone"},
		},
		{
			name:     "corrupt state file",
			config:   tp.Config(),
			state:    `{"version": 1, "bindings": [`,
			wantErrs: []string{"state.path: " + filepath.Join(tp.dir, "state.json")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.state != "" {
				p := filepath.Join(tp.dir, "state.json")
				if err := os.WriteFile(p, []byte(tc.state), 0o600); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(p)
			}
			path := tp.WriteConfig(strings.ReplaceAll(tc.name, " ", "-")+".toml", tc.config)
			out, errOut, code := check(path)
			if code != 1 {
				t.Errorf("vipmux check: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			for _, w := range tc.wantErrs {
				if !strings.Contains(errOut, w) {
					t.Errorf("vipmux check stderr lacks %q:\n%s", w, errOut)
				}
			}
			if want := fmt.Sprintf(": %d error", len(tc.wantErrs)); !strings.Contains(errOut, want) || !strings.Contains(errOut, "serve would not start with this config") {
				t.Errorf("vipmux check stderr lacks %q:\n%s", want, errOut)
			}
		})
	}

	// Before a reload: the gateway holds the NIC and the control port.
	tp.StartConfig(good)
	out, errOut, code = check(good)
	if code != 0 || !strings.Contains(out, "control.listen: 127.0.0.1:7070 is in use") {
		t.Errorf("vipmux check with the gateway running: exit %d, want 0 with a warning that control.listen is in use\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

// TestStatusFromConfig checks that on the gateway's host the client finds
// the gateway and its token in the config file (issue 15, point 5):
// --config after or before the command, $VIPMUX_CONFIG; and that
// --gateway takes host:port, before the command too.
func TestStatusFromConfig(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Token: "status-token"})
	g := tp.Start()
	// tp.CLI names the gateway in $VIPMUX_GATEWAY; here it is unset, so
	// that the client must find it itself.
	noGateway := []string{"VIPMUX_GATEWAY="}
	if out, errOut, code := tp.CLI([]string{"VIPMUX_TOKEN_FILE=" + tp.TokenFile()}, "register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", tp.Servers[0].IP); code != 0 {
		t.Fatalf("vipmux register: exit %d\n%s%s", code, out, errOut)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"config after the command", noGateway, []string{"status", "--config", g.Config}},
		{"config before the command", noGateway, []string{"--config", g.Config, "status"}},
		{"VIPMUX_CONFIG", append([]string{"VIPMUX_CONFIG=" + g.Config}, noGateway...), []string{"status"}},
		{"gateway host:port and token before the command", noGateway, []string{"--gateway", "127.0.0.1:7070", "--token-file", tp.TokenFile(), "status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := tp.CLI(tc.env, tc.args...)
			if code != 0 || !strings.Contains(out, "web-a") || !strings.Contains(out, "198.18.0.10") {
				t.Errorf("vipmux %s: exit %d, want 0 and web-a's binding\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, out, errOut)
			}
		})
	}
	// The config's token goes only to the config's address: with
	// --gateway and no token, the gateway refuses.
	_, errOut, code := tp.CLI(noGateway, "--gateway", "127.0.0.1:7070", "status", "--config", g.Config)
	if code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("vipmux --gateway 127.0.0.1:7070 status (no token): exit %d, want 1 with 401\nstderr:\n%s", code, errOut)
	}
	g.Stop(syscall.SIGTERM, 5*time.Second)
}

// TestCLIErrors runs the real binary's error paths (issue 15, point 6):
// a mistyped command is answered with the right one, help COMMAND works,
// a usage error is one line and a hint, and an answer from something that
// is not a gateway is summarised, not dumped. The fake web server listens
// on loopback in the test's own namespace.
func TestCLIErrors(t *testing.T) {
	requireVipmux(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "<!DOCTYPE html>\n<html><head><title>404</title></head><body><h1>Not Found</h1><p>The page was not found on this server.</p></body></html>\n")
	}))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")
	// Nothing listens on port 1: a usage error must come first.
	noGateway := []string{"VIPMUX_GATEWAY=127.0.0.1:1"}
	for _, tc := range []struct {
		name      string
		args      []string
		wantCode  int
		wantOut   string
		wantErr   []string // lines of stderr, exactly
		wantInErr string   // or a part of it
	}{
		{name: "typo", args: []string{"regster"}, wantCode: 1, wantErr: []string{`vipmux: unknown command "regster"; did you mean "register"?`, "Run 'vipmux --help' for the commands."}},
		{name: "help register", args: []string{"help", "register"}, wantCode: 0, wantOut: "vipmux register - register a server computer"},
		{name: "ttl without unit", args: []string{"register", "--name", "web-a", "--backend", "198.19.0.2", "--ttl", "5"}, wantCode: 1,
			wantErr: []string{`vipmux: register: --ttl "5": write a duration such as "5s", "500ms" or "1m30s" (units ns, us, ms, s, m, h)`, "Run 'vipmux register --help' for its flags and examples."}},
		{name: "unknown flag", args: []string{"deregister", "--nmae", "web-a"}, wantCode: 1,
			wantErr: []string{"vipmux: deregister: unknown flag --nmae; did you mean --name?", "Run 'vipmux deregister --help' for its flags and examples."}},
		{name: "not a gateway", args: []string{"--gateway", webAddr, "status"}, wantCode: 1,
			wantErr: []string{"vipmux: status: not a vipmux gateway: 404 Not Found (text/html) from " + web.URL + "/v1/status"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(20*time.Second, noGateway, vipmuxBin, tc.args...)
			if code != tc.wantCode {
				t.Errorf("vipmux %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.wantCode, out, errOut)
			}
			if tc.wantOut != "" && !strings.Contains(out, tc.wantOut) {
				t.Errorf("vipmux %s: stdout lacks %q:\n%s", strings.Join(tc.args, " "), tc.wantOut, out)
			}
			if tc.wantErr != nil {
				if got := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(tc.wantErr, "\n") {
					t.Errorf("vipmux %s: stderr\n%s\nwant\n%s", strings.Join(tc.args, " "), errOut, strings.Join(tc.wantErr, "\n"))
				}
				if tc.wantCode != 0 && out != "" {
					t.Errorf("vipmux %s: stdout %q, want nothing (no help dumped)", strings.Join(tc.args, " "), out)
				}
			}
		})
	}
}
