package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestGatewayURL(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{in: "127.0.0.1:7070", want: "http://127.0.0.1:7070"},
		{in: "198.19.0.1:7070", want: "http://198.19.0.1:7070"},
		{in: "[2001:db8::1]:7070", want: "http://[2001:db8::1]:7070"},
		{in: "gw.example:7070", want: "http://gw.example:7070"},
		{in: ":7070", want: "http://127.0.0.1:7070"},
		{in: "0.0.0.0:7070", want: "http://127.0.0.1:7070"},
		{in: "[::]:7070", want: "http://[::1]:7070"},
		{in: "http://198.19.0.1:7070/", want: "http://198.19.0.1:7070"},
		{in: "https://gw.example", want: "https://gw.example"},
		{in: "gw.example", wantErr: `"gw.example": write host:port`},
		{in: "127.0.0.1:0", wantErr: "write host:port"},
		{in: "127.0.0.1:http", wantErr: "write host:port"},
		{in: "ftp://gw.example", wantErr: "a URL such as"},
	} {
		got, err := gatewayURL(tc.in)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("gatewayURL(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("gatewayURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// fakeGateway answers GET /v1/status with an empty table and records the
// Authorization header of each request.
type fakeGateway struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	g := &fakeGateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.auth = append(g.auth, r.Header.Get("Authorization"))
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"bindings":[]}`)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// hostPort is the fake's address as [control] listen writes it.
func (g *fakeGateway) hostPort() string { return strings.TrimPrefix(g.srv.URL, "http://") }

// lastAuth is the Authorization header of the last request, and whether
// there was one.
func (g *fakeGateway) lastAuth() (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.auth) == 0 {
		return "", false
	}
	return g.auth[len(g.auth)-1], true
}

// TestClientFindsGateway checks where the client commands find the
// gateway and the token: --gateway before or after the command, then
// $VIPMUX_GATEWAY, then [control] of the config file (--config before or
// after the command, or $VIPMUX_CONFIG), and that the config's token is
// never sent to an address that did not come from the config.
func TestClientFindsGateway(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfgGW, flagGW, envGW := newFakeGateway(t), newFakeGateway(t), newFakeGateway(t)
	cfgToken := write("cfg-token", "from-config\n")
	flagToken := write("flag-token", "from-flag\n")
	cfg := write("vipmux.toml", fmt.Sprintf("[nic]\ndriver = \"tap\"\ninterface = \"vt0\"\nnetworks = [\"198.18.0.0/24\"]\n[control]\nlisten = %q\ntoken_file = %q\n", cfgGW.hostPort(), cfgToken))
	// A config with an error elsewhere still names the gateway.
	broken := write("broken.toml", fmt.Sprintf("[nic]\ndriver = \"tapp\"\n[control]\nlisten = %q\ntoken_file = %q\n", cfgGW.hostPort(), cfgToken))

	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		want     *fakeGateway
		wantAuth string
	}{
		{name: "config after the command", args: []string{"status", "--config", cfg}, want: cfgGW, wantAuth: "Bearer from-config"},
		{name: "config before the command", args: []string{"--config", cfg, "status"}, want: cfgGW, wantAuth: "Bearer from-config"},
		{name: "VIPMUX_CONFIG", env: map[string]string{"VIPMUX_CONFIG": cfg}, args: []string{"status"}, want: cfgGW, wantAuth: "Bearer from-config"},
		{name: "config with errors elsewhere", args: []string{"status", "--config", broken}, want: cfgGW, wantAuth: "Bearer from-config"},
		{name: "token file flag wins over the config's", args: []string{"--token-file", flagToken, "status", "--config", cfg}, want: cfgGW, wantAuth: "Bearer from-flag"},
		{name: "gateway host:port before the command", args: []string{"--gateway", flagGW.hostPort(), "status", "--config", cfg}, want: flagGW, wantAuth: ""},
		{name: "gateway URL after the command", args: []string{"status", "--gateway", flagGW.srv.URL, "--token-file", flagToken}, want: flagGW, wantAuth: "Bearer from-flag"},
		{name: "after wins over before", args: []string{"--gateway", envGW.hostPort(), "status", "--gateway", flagGW.hostPort()}, want: flagGW},
		{name: "VIPMUX_GATEWAY wins over the config", env: map[string]string{"VIPMUX_GATEWAY": envGW.hostPort(), "VIPMUX_CONFIG": cfg}, args: []string{"status"}, want: envGW, wantAuth: ""},
		{name: "flag wins over VIPMUX_GATEWAY", env: map[string]string{"VIPMUX_GATEWAY": envGW.hostPort()}, args: []string{"status", "--gateway", flagGW.hostPort()}, want: flagGW},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"VIPMUX_GATEWAY", "VIPMUX_CONFIG", "VIPMUX_TOKEN_FILE"} {
				t.Setenv(k, tc.env[k])
			}
			before := map[*fakeGateway]int{}
			for _, g := range []*fakeGateway{cfgGW, flagGW, envGW} {
				g.mu.Lock()
				before[g] = len(g.auth)
				g.mu.Unlock()
			}
			out, err := runApp(tc.args...)
			if err != nil {
				t.Fatalf("vipmux %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
			for _, g := range []*fakeGateway{cfgGW, flagGW, envGW} {
				g.mu.Lock()
				n := len(g.auth) - before[g]
				g.mu.Unlock()
				if want := map[bool]int{true: 1, false: 0}[g == tc.want]; n != want {
					t.Errorf("vipmux %s: %s got %d requests, want %d", strings.Join(tc.args, " "), g.srv.URL, n, want)
				}
			}
			if auth, _ := tc.want.lastAuth(); auth != tc.wantAuth {
				t.Errorf("vipmux %s: Authorization %q, want %q", strings.Join(tc.args, " "), auth, tc.wantAuth)
			}
		})
	}
}

// TestClientConfigErrors checks the errors of a config that cannot name
// the gateway: a --config that does not exist, and a token file that the
// config names but that cannot be read.
func TestClientConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"VIPMUX_GATEWAY", "VIPMUX_CONFIG", "VIPMUX_TOKEN_FILE"} {
		t.Setenv(k, "")
	}
	missing := filepath.Join(dir, "none.toml")
	noToken := filepath.Join(dir, "no-token.toml")
	if err := os.WriteFile(noToken, []byte("[control]\nlisten = \"127.0.0.1:7070\"\ntoken_file = \""+filepath.Join(dir, "token")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--config", missing}, "--config " + missing + ": open " + missing + ": no such file or directory (or name the gateway with --gateway)"},
		{[]string{"--config", noToken, "status"}, "[control] token_file of " + noToken + ": read token file"},
	} {
		_, err := runApp(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("vipmux %s: %v, want an error with %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
