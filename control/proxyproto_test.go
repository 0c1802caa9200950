package control

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/registry"
)

func TestHandlerProxyProtocol(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantCode int
		// wantView is the answer's proxy_protocol of the member web-c.
		wantView string
		// wantStored is the member's setting in the registry.
		wantStored registry.ProxyProtocol
		wantField  string
	}{
		{name: "v1", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":"v1"}`, wantCode: 200, wantView: "v1", wantStored: registry.ProxyV1},
		{name: "v2", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":"v2"}`, wantCode: 200, wantView: "v2", wantStored: registry.ProxyV2},
		{name: "none", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":"none"}`, wantCode: 200},
		{name: "empty", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":""}`, wantCode: 200},
		{name: "absent", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 200},
		{name: "mode 2", body: `{"name":"web-c","port":443,"backend":"198.19.0.4","proxy_protocol":"v2"}`, wantCode: 200, wantView: "v2", wantStored: registry.ProxyV2},
		{name: "v3", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":"v3"}`, wantCode: 400, wantField: "proxy_protocol"},
		{name: "upper case", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":"V2"}`, wantCode: 400, wantField: "proxy_protocol"},
		{name: "number", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":2}`, wantCode: 400, wantField: "proxy_protocol"},
		{name: "bool", body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","proxy_protocol":true}`, wantCode: 400, wantField: "proxy_protocol"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			before := tableJSON(t, reg)
			rec := do(h, http.MethodPost, PathRegister, tc.body, "")
			if rec.Code != tc.wantCode {
				t.Fatalf("POST %s %s: code %d, want %d; body %s", PathRegister, tc.body, rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantCode != 200 {
				checkErrorBody(t, rec, tc.wantField)
				if after := tableJSON(t, reg); after != before {
					t.Errorf("table changed by a refused request:\nbefore %s\n after %s", before, after)
				}
				return
			}
			var b BindingView
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
				t.Fatalf("decode %s: %v", rec.Body.String(), err)
			}
			if len(b.Members) != 1 || b.Members[0].ProxyProtocol != tc.wantView {
				t.Errorf("answer members = %+v, want web-c with proxy_protocol %q", b.Members, tc.wantView)
			}
			if tc.wantView == "" && strings.Contains(rec.Body.String(), "proxy_protocol") {
				t.Errorf("answer %s has proxy_protocol, want it absent for none", rec.Body.String())
			}
			ip := netip.MustParseAddr(b.IP)
			m, _, ok := reg.Lookup(ip, 443)
			if !ok || m.Name != "web-c" || m.ProxyProtocol != tc.wantStored {
				t.Errorf("Lookup(%s, 443) = %+v, %v; want web-c with %q", ip, m, ok, tc.wantStored)
			}
		})
	}
}

func TestHandlerStatusProxyProtocol(t *testing.T) {
	h, _ := testHandler(t, nil)
	if rec := do(h, http.MethodPost, PathRegister, `{"name":"web-b","port":80,"backend":"198.19.0.3:80","state":"standby","proxy_protocol":"v1"}`, ""); rec.Code != 200 {
		t.Fatalf("register: %d %s", rec.Code, rec.Body.String())
	}
	rec := do(h, http.MethodGet, PathStatus, "", "")
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("decode status %s: %v", rec.Body.String(), err)
	}
	got := map[string]string{}
	for _, b := range st.Bindings {
		for _, m := range b.Members {
			got[b.IP+"/"+m.Name+"/"+m.Backend] = m.ProxyProtocol
		}
	}
	want := map[string]string{
		"198.18.0.10/web-a/198.19.0.2":     "",
		"198.18.0.100/web-a/198.19.0.2:80": "",
		"198.18.0.100/web-b/198.19.0.3:80": "v1",
	}
	if len(got) != len(want) {
		t.Fatalf("status members = %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("status %s proxy_protocol = %q, want %q", k, got[k], w)
		}
	}
}
