package control

import (
	"net/http"
	"testing"
)

// TestRegisterRefusesSelfBackend: a backend that would turn the gateway
// against itself (issue 12, point 3) is answered with 400 naming backend
// (registrations[INDEX].backend in a batch), and the table is unchanged.
func TestRegisterRefusesSelfBackend(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		body      string
		wantField string
	}{
		{"loopback", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"127.0.0.1"}`, "backend"},
		{"loopback with port", PathRegister, `{"name":"s1","port":8080,"backend":"127.0.0.1:7070"}`, "backend"},
		{"IPv6 loopback", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"[::1]:80"}`, "backend"},
		{"link-local", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"169.254.169.254:80"}`, "backend"},
		{"multicast", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"224.0.0.1:80"}`, "backend"},
		{"broadcast", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"255.255.255.255:80"}`, "backend"},
		{"a mode-1 front IP", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"198.18.0.10:80"}`, "backend"},
		{"the shared address", PathRegister, `{"name":"s1","ip":"198.18.0.11","backend":"198.18.0.100:80"}`, "backend"},
		{"batch", PathRegisterBatch, `{"registrations":[
			{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.4"},
			{"name":"s2","ip":"198.18.0.12","backend":"127.0.0.1"}]}`, "registrations[1].backend"},
		{"batch, a front IP of the batch", PathRegisterBatch, `{"registrations":[
			{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.4"},
			{"name":"s2","ip":"198.18.0.12","backend":"198.18.0.11:22"}]}`, "registrations[1].backend"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			before := tableJSON(t, reg)
			rec := do(h, http.MethodPost, tc.path, tc.body, "")
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("POST %s %s: %d %s, want 400", tc.path, tc.body, rec.Code, rec.Body)
			}
			checkErrorBody(t, rec, tc.wantField)
			if after := tableJSON(t, reg); after != before {
				t.Errorf("a refused registration changed the table:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}
