package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipmux/vipmux/internal/testcert"
)

// TestRegisterRefusesSelfBackend runs the real binary (issue 12, point 3):
// a backend of 127.0.0.1 (which would forward every front port to the
// gateway's own loopback: its control API, metrics, pprof) and a backend
// that is one of the gateway's front addresses (a mode-1 IP, the shared
// address) are refused: the CLI exits non-zero naming backend, the API
// answers 400 with field "backend" (registrations[i].backend in a batch),
// and the table does not change.
func TestRegisterRefusesSelfBackend(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Extra: "[shared]\naddress = \"198.18.0.100\"\n"})
	tp.Start()
	tp.Register("web-a", "198.18.0.10", tp.Servers[0].IP)
	before := tp.Status().Summary()

	for _, tc := range []struct{ name, ip, backend string }{
		{"loopback", "198.18.0.11", "127.0.0.1"},
		{"loopback with the control port", "198.18.0.11", "127.0.0.1:7070"},
		{"own mode-1 IP", "198.18.0.11", "198.18.0.10:80"},
		{"the shared address", "198.18.0.11", "198.18.0.100"},
		{"link-local", "198.18.0.11", "169.254.169.254:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := tp.CLI(nil, "register", "--name", "evil", "--ip", tc.ip, "--backend", tc.backend)
			if code == 0 || !strings.Contains(errOut, "backend") {
				t.Errorf("vipmux register --backend %s: exit %d, want non-zero naming backend\nstdout: %s\nstderr: %s", tc.backend, code, out, errOut)
			}
			r := tp.API("POST", "/v1/register", `{"name":"evil","ip":"`+tc.ip+`","backend":"`+tc.backend+`"}`, "")
			if r.Code != 400 || r.Error.Field != "backend" {
				t.Errorf("POST /v1/register backend %s: %d %s, want 400 with field backend", tc.backend, r.Code, r.Body)
			}
		})
	}
	r := tp.API("POST", "/v1/register/batch", `{"registrations":[{"name":"s1","ip":"198.18.0.12","backend":"198.19.0.2"},{"name":"s2","ip":"198.18.0.13","backend":"127.0.0.1:9100"}]}`, "")
	if r.Code != 400 || r.Error.Field != "registrations[1].backend" {
		t.Errorf("POST /v1/register/batch with a loopback backend: %d %s, want 400 with field registrations[1].backend", r.Code, r.Body)
	}
	if after := tp.Status().Summary(); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("refused registrations changed the table:\nbefore %v\nafter  %v", before, after)
	}
}

// TestControlExposedRefused runs the real binary (issue 12, point 4): a
// control API that listens on the back-side network without a token makes
// serve exit non-zero at once, and vipmux check fail, both naming
// control.listen and the keys that fix it (token_file, insecure = true);
// with insecure = true written on purpose, serve starts.
func TestControlExposedRefused(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, ControlListen: gatewayControl})
	exposed := strings.Replace(tp.Config(), "insecure = true\n", "", 1)
	p := tp.WriteConfig("exposed.toml", exposed)

	out, errOut, code := run(10*time.Second, nil, "ip", "netns", "exec", tp.GatewayNS, vipmuxBin, "serve", "--config", p)
	if code <= 0 {
		t.Errorf("vipmux serve with control.listen %s and no token: exit %d, want a refusal (non-zero exit)\nstdout: %s\nstderr: %s", gatewayControl, code, out, errOut)
	}
	for _, want := range []string{"control.listen", "not a loopback address", "token_file", "insecure = true"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("vipmux serve's refusal lacks %q:\n%s", want, errOut)
		}
	}
	out, errOut, code = tp.CLI(nil, "check", "--config", p)
	if code != 1 || !strings.Contains(errOut, "control.listen") || !strings.Contains(errOut, "insecure = true") {
		t.Errorf("vipmux check: exit %d, want 1 naming control.listen and insecure = true\nstdout: %s\nstderr: %s", code, out, errOut)
	}

	insecure := strings.Replace(exposed, "[control]\n", "[control]\ninsecure = true\n", 1)
	tp.StartConfig(tp.WriteConfig("insecure.toml", insecure)) // fails the test unless /healthz answers
}

// TestTokenRotation runs the real binary (issue 12, point 4): the token
// file is read again on reload, through the API (vipmux reload) and
// through SIGHUP, so that rotating the token needs no restart; the old
// token is refused afterwards.
func TestTokenRotation(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Token: "first-token"})
	g := tp.Start()
	rotate := func(tok string) {
		t.Helper()
		if err := os.WriteFile(tp.TokenFile(), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if r := tp.API("GET", "/v1/status", "", "first-token"); r.Code != 200 {
		t.Fatalf("GET /v1/status with the first token: %d %s", r.Code, r.Body)
	}

	// vipmux reload, authenticated with the token in force.
	rotate("second-token")
	if err := os.WriteFile(tp.TokenFile()+".first", []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := tp.CLI([]string{"VIPMUX_TOKEN_FILE=" + tp.TokenFile() + ".first"}, "reload"); code != 0 {
		t.Fatalf("vipmux reload with the first token: exit %d\n%s%s", code, out, errOut)
	}
	if r := tp.API("GET", "/v1/status", "", "first-token"); r.Code != 401 {
		t.Errorf("GET /v1/status with the first token after the rotation: %d, want 401", r.Code)
	}
	if r := tp.API("GET", "/v1/status", "", "second-token"); r.Code != 200 {
		t.Errorf("GET /v1/status with the second token after the rotation: %d %s, want 200", r.Code, r.Body)
	}

	// SIGHUP.
	rotate("third-token")
	g.hup()
	g.waitLog(t, "config reloaded", 2)
	if r := tp.API("GET", "/v1/status", "", "second-token"); r.Code != 401 {
		t.Errorf("GET /v1/status with the second token after SIGHUP: %d, want 401", r.Code)
	}
	if r := tp.API("GET", "/v1/status", "", "third-token"); r.Code != 200 {
		t.Errorf("GET /v1/status with the third token after SIGHUP: %d %s, want 200", r.Code, r.Body)
	}
}

// TestControlTLS runs the real binary (issue 12, point 4): with [control]
// tls_cert and tls_key (a certificate generated here, signed by a CA
// generated here) the control API speaks HTTPS only; the CLI trusts the CA
// of --ca-file or $VIPMUX_CA_FILE, finds https from the config's
// tls_cert, and refuses the certificate without the CA.
func TestControlTLS(t *testing.T) {
	tp := NewTopology(t, Options{Driver: "afpacket", Servers: []string{"web-a"}, Token: "tls-token"})
	certs := testcert.Write(t, tp.dir, "api", "127.0.0.1")
	cfg := tp.WriteConfig("tls.toml", strings.Replace(tp.Config(), "[control]\n",
		fmt.Sprintf("[control]\ntls_cert = %q\ntls_key = %q\n", certs.Cert, certs.Key), 1))
	p := tp.startProc("vipmux-tls", tp.GatewayNS, vipmuxBin, "serve", "--config", cfg)
	https := []string{"VIPMUX_GATEWAY=https://127.0.0.1:7070", "VIPMUX_TOKEN_FILE=" + tp.TokenFile()}

	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := tp.CLI(https, "status", "--ca-file", certs.CA)
		if code == 0 {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("vipmux status over TLS with --ca-file: exit %d\n%s%s\nserve's log:\n%s", code, out, errOut, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, errOut, code := tp.CLI(append(https, "VIPMUX_CA_FILE="+certs.CA), "register", "--name", "web-a", "--ip", "198.18.0.10", "--backend", tp.Servers[0].IP); code != 0 {
		t.Errorf("vipmux register over TLS with $VIPMUX_CA_FILE: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := tp.CLI([]string{"VIPMUX_GATEWAY="}, "status", "--config", cfg, "--ca-file", certs.CA); code != 0 || !strings.Contains(out, "web-a") {
		t.Errorf("vipmux status --config (https from tls_cert) --ca-file: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := tp.CLI(https, "status"); code == 0 || !strings.Contains(errOut, "certificate") {
		t.Errorf("vipmux status over TLS without the CA: exit %d, want a certificate error\n%s%s", code, out, errOut)
	}
	if r, _, code := tp.GatewayCurl("-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer tls-token", "http://127.0.0.1:7070/v1/status"); code == 0 && r == "200" {
		t.Errorf("plain HTTP to the TLS control API: served (%s), want a failure", r)
	}
	if code, _, ok := p.stop(syscall.SIGTERM, 5*time.Second); !ok || code != 0 {
		t.Errorf("vipmux serve after SIGTERM: exit %d (exited: %v), want 0", code, ok)
	}
}
