package control

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vipmux/vipmux/registry"
)

// TestSwitchToDownMember (issue 12 point 7): POST /v1/switch to a member
// known to be down answers 409 naming "to" and its health, and changes
// nothing; with "force": true it switches.
func TestSwitchToDownMember(t *testing.T) {
	h, reg := testHandler(t, nil)
	k := registry.Key{IP: testShared, Port: 80}
	if err := reg.SetHealth(k, "web-b", false, "health check failed: connection refused"); err != nil {
		t.Fatal(err)
	}
	before := tableJSON(t, reg)
	rec := do(h, http.MethodPost, PathSwitch, `{"port":80,"to":"web-b"}`, "")
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "health check failed: connection refused") {
		t.Errorf("switch to a down member = %d %s, want 409 naming its health", rec.Code, rec.Body.String())
	}
	checkErrorBody(t, rec, "to")
	if after := tableJSON(t, reg); after != before {
		t.Errorf("the refused switch changed the table:\nbefore %s\nafter  %s", before, after)
	}
	rec = do(h, http.MethodPost, PathSwitch, `{"port":80,"to":"web-b","force":true}`, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("forced switch = %d %s, want 200", rec.Code, rec.Body.String())
	}
	if m, _, ok := reg.Lookup(testShared, 80); !ok || m.Name != "web-b" {
		t.Errorf("after the forced switch Lookup = %q %v, want web-b", m.Name, ok)
	}
}
