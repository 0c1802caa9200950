package e2e

import (
	"strings"
	"testing"
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
