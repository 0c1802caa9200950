package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRegisterBatch applies good batches and checks the answer and the
// table.
func TestRegisterBatch(t *testing.T) {
	tests := []struct {
		name string
		body string
		want RegisterBatchResult
		// wantActive maps front addresses to the name that Lookup finds
		// on port 22 afterwards.
		wantActive map[string]string
	}{
		{
			name: "mode 1 and mode 2 in one batch",
			body: `{"registrations":[
				{"name":"s2","ip":"198.18.0.12","backend":"198.19.0.5"},
				{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.4","ttl":"1m"},
				{"name":"web-c","port":80,"backend":"198.19.0.4:80"}]}`,
			want: RegisterBatchResult{Registered: 3, Bindings: []BindingView{
				{IP: "198.18.0.11", Members: []MemberView{{Name: "s1", Backend: "198.19.0.4", State: "active", Since: testNow, TTL: "1m0s", Expires: testNow.Add(60e9), Reason: "registered", Cause: "register"}}},
				{IP: "198.18.0.12", Members: []MemberView{{Name: "s2", Backend: "198.19.0.5", State: "active", Since: testNow, Reason: "registered", Cause: "register"}}},
				{IP: "198.18.0.100", Port: 80, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2:80", State: "active", Since: testNow, Connections: 3, Reason: "registered", Cause: "register"},
					{Name: "web-b", Backend: "198.19.0.3:80", State: "standby", Since: testNow, Reason: "registered", Cause: "register"},
					{Name: "web-c", Backend: "198.19.0.4:80", State: "standby", Since: testNow, Reason: "registered", Cause: "register"},
				}},
			}},
			wantActive: map[string]string{"198.18.0.11": "s1", "198.18.0.12": "s2"},
		},
		{
			name: "a later registration of the batch updates an earlier one",
			body: `{"registrations":[
				{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.4"},
				{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.9"}]}`,
			want: RegisterBatchResult{Registered: 2, Bindings: []BindingView{
				{IP: "198.18.0.11", Members: []MemberView{{Name: "s1", Backend: "198.19.0.9", State: "active", Since: testNow, Reason: "registered", Cause: "register"}}},
			}},
			wantActive: map[string]string{"198.18.0.11": "s1"},
		},
		{
			name: "empty batch",
			body: `{"registrations":[]}`,
			want: RegisterBatchResult{Registered: 0, Bindings: []BindingView{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			rec := do(h, http.MethodPost, PathRegisterBatch, tc.body, "")
			if rec.Code != http.StatusOK {
				t.Fatalf("POST %s = %d %s, want 200", PathRegisterBatch, rec.Code, rec.Body)
			}
			var got RegisterBatchResult
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode answer %s: %v", rec.Body, err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("answer (-want +got):\n%s", d)
			}
			for ip, name := range tc.wantActive {
				m, _, ok := reg.Lookup(netip.MustParseAddr(ip), 22)
				if !ok || m.Name != name {
					t.Errorf("Lookup(%s, 22) = %q, %v; want %q", ip, m.Name, ok, name)
				}
			}
		})
	}
}

// TestRegisterBatchRefused sends batches with one bad registration (or a
// bad batch) and checks the status, the field that the error names (with
// the registration's index) and that nothing of the batch was applied.
func TestRegisterBatchRefused(t *testing.T) {
	good := `{"name":"s1","ip":"198.18.0.11","backend":"198.19.0.4"}`
	tooMany := `{"registrations":[` + strings.Repeat(good+",", MaxBatch) + good + `]}`
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantField string
	}{
		{"bad ip", `{"registrations":[` + good + `,{"name":"s2","ip":"198.18.0.999","backend":"198.19.0.4"}]}`, http.StatusBadRequest, "registrations[1].ip"},
		{"ip outside the networks", `{"registrations":[` + good + `,` + good + `,{"name":"s2","ip":"198.18.1.2","backend":"198.19.0.4"}]}`, http.StatusBadRequest, "registrations[2].ip"},
		{"missing backend", `{"registrations":[{"name":"s2","ip":"198.18.0.12"},` + good + `]}`, http.StatusBadRequest, "registrations[0].backend"},
		{"bad name", `{"registrations":[` + good + `,{"name":"-x","ip":"198.18.0.12","backend":"198.19.0.4"}]}`, http.StatusBadRequest, "registrations[1].name"},
		{"unknown field", `{"registrations":[` + good + `,{"name":"s2","ip":"198.18.0.12","backend":"198.19.0.4","colour":"red"}]}`, http.StatusBadRequest, "registrations[1].colour"},
		{"port of the wrong type", `{"registrations":[{"name":"s2","port":"80","backend":"198.19.0.4"}]}`, http.StatusBadRequest, "registrations[0].port"},
		{"port out of range", `{"registrations":[` + good + `,{"name":"s2","port":70000,"backend":"198.19.0.4"}]}`, http.StatusBadRequest, "registrations[1].port"},
		{"bad ttl", `{"registrations":[` + good + `,{"name":"s2","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"soon"}]}`, http.StatusBadRequest, "registrations[1].ttl"},
		{"not an object", `{"registrations":[` + good + `,42]}`, http.StatusBadRequest, "registrations[1]"},
		{"held by another server in the table", `{"registrations":[` + good + `,{"name":"s2","ip":"198.18.0.10","backend":"198.19.0.4"}]}`, http.StatusConflict, "registrations[1].ip"},
		{"held by an earlier registration of the batch", `{"registrations":[` + good + `,{"name":"s2","ip":"198.18.0.11","backend":"198.19.0.4"}]}`, http.StatusConflict, "registrations[1].ip"},
		{"second active on a port", `{"registrations":[` + good + `,{"name":"web-c","port":80,"backend":"198.19.0.4:80","state":"active"}]}`, http.StatusConflict, "registrations[1].state"},
		{"no list", `{}`, http.StatusBadRequest, "registrations"},
		{"list of the wrong type", `{"registrations":{}}`, http.StatusBadRequest, "registrations"},
		{"too many", tooMany, http.StatusBadRequest, "registrations"},
		{"unknown top-level field", `{"registrations":[],"atomic":true}`, http.StatusBadRequest, "atomic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			before := tableJSON(t, reg)
			rec := do(h, http.MethodPost, PathRegisterBatch, tc.body, "")
			if rec.Code != tc.wantCode {
				t.Fatalf("POST %s = %d %s, want %d", PathRegisterBatch, rec.Code, rec.Body, tc.wantCode)
			}
			checkErrorBody(t, rec, tc.wantField)
			if after := tableJSON(t, reg); after != before {
				t.Errorf("a refused batch changed the table:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestClientRegisterBatch goes through the Go client and a real server: a
// good batch, then a refused one whose APIError names the index.
func TestClientRegisterBatch(t *testing.T) {
	h, reg := testHandler(t, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL, HTTP: srv.Client()}
	var req RegisterBatchRequest
	for i := range 50 {
		req.Registrations = append(req.Registrations, RegisterRequest{Name: fmt.Sprintf("s%d", i), IP: fmt.Sprintf("198.18.0.%d", 20+i), Backend: "198.19.0.4"})
	}
	res, err := c.RegisterBatch(t.Context(), req)
	if err != nil || res.Registered != 50 || len(res.Bindings) != 50 {
		t.Fatalf("RegisterBatch(50) = %d registered, %d bindings, %v; want 50, 50, nil", res.Registered, len(res.Bindings), err)
	}
	if n := reg.Table().Len(); n != 52 {
		t.Errorf("table has %d bindings after the batch, want 52", n)
	}
	req.Registrations[7].Backend = "nowhere"
	_, err = c.RegisterBatch(t.Context(), req)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != http.StatusBadRequest || apiErr.Field != "registrations[7].backend" {
		t.Errorf("RegisterBatch with a bad backend at 7 = %v; want a 400 APIError naming registrations[7].backend", err)
	}
}
