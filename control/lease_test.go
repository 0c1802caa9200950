package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// memberOf returns the view of member name in the binding answer body.
func memberOf(t *testing.T, body []byte, name string) MemberView {
	t.Helper()
	var b BindingView
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("binding answer %q: %v", body, err)
	}
	for _, m := range b.Members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("binding answer %s has no member %s", body, name)
	return MemberView{}
}

func TestHandlerRegisterTTL(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantCode    int
		wantField   string
		wantTTL     string
		wantExpires time.Time
	}{
		{name: "2s", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"2s"}`, wantCode: 200, wantTTL: "2s", wantExpires: testNow.Add(2 * time.Second)},
		{name: "1m30s mode 2", body: `{"name":"web-c","port":80,"backend":"198.19.0.4:80","ttl":"1m30s"}`, wantCode: 200, wantTTL: "1m30s", wantExpires: testNow.Add(90 * time.Second)},
		{name: "no ttl is permanent", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4"}`, wantCode: 200},
		{name: "not a duration", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"soon"}`, wantCode: 400, wantField: "ttl"},
		{name: "bare number", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"5"}`, wantCode: 400, wantField: "ttl"},
		{name: "JSON number", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":5}`, wantCode: 400, wantField: "ttl"},
		{name: "zero", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"0s"}`, wantCode: 400, wantField: "ttl"},
		{name: "negative", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"-2s"}`, wantCode: 400, wantField: "ttl"},
		{name: "below min", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"50ms"}`, wantCode: 400, wantField: "ttl"},
		{name: "above max", body: `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"25h"}`, wantCode: 400, wantField: "ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			before := tableJSON(t, reg)
			rec := do(h, http.MethodPost, PathRegister, tc.body, "")
			if rec.Code != tc.wantCode {
				t.Fatalf("POST %s %s = %d %s, want %d", PathRegister, tc.body, rec.Code, rec.Body, tc.wantCode)
			}
			if tc.wantCode != 200 {
				checkErrorBody(t, rec, tc.wantField)
				if after := tableJSON(t, reg); after != before {
					t.Errorf("a refused register changed the table:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			m := memberOf(t, rec.Body.Bytes(), "web-c")
			if m.TTL != tc.wantTTL || !m.Expires.Equal(tc.wantExpires) {
				t.Errorf("registered member ttl %q expires %v, want %q %v", m.TTL, m.Expires, tc.wantTTL, tc.wantExpires)
			}
			if tc.wantTTL == "" && (strings.Contains(rec.Body.String(), `"ttl"`) || strings.Contains(rec.Body.String(), `"expires"`)) {
				t.Errorf("permanent member's view %s shows ttl or expires, want them omitted", rec.Body)
			}
		})
	}
}

func TestHandlerRenew(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		body      string
		token     string
		wantCode  int
		wantField string
	}{
		{name: "mode 1", body: `{"name":"web-c","ip":"198.18.0.12"}`, wantCode: 200},
		{name: "mode 2 on the shared address", body: `{"name":"web-d","port":80}`, wantCode: 200},
		{name: "nothing on the ip", body: `{"name":"web-c","ip":"198.18.0.13"}`, wantCode: 404, wantField: "ip"},
		{name: "nothing on the port", body: `{"name":"web-d","port":81}`, wantCode: 404, wantField: "port"},
		{name: "not a member", body: `{"name":"web-x","port":80}`, wantCode: 404, wantField: "name"},
		{name: "no lease", body: `{"name":"web-a","ip":"198.18.0.10"}`, wantCode: 400, wantField: "ttl"},
		{name: "bad name", body: `{"name":"-c","ip":"198.18.0.12"}`, wantCode: 400, wantField: "name"},
		{name: "bad ip", body: `{"name":"web-c","ip":"nope"}`, wantCode: 400, wantField: "ip"},
		{name: "bad port", body: `{"name":"web-c","port":0}`, wantCode: 400, wantField: "port"},
		{name: "no ip, no port", body: `{"name":"web-c"}`, wantCode: 400, wantField: "ip"},
		{name: "unknown field", body: `{"name":"web-c","ip":"198.18.0.12","ttl":"2s"}`, wantCode: 400, wantField: "ttl"},
		{name: "GET", method: http.MethodGet, wantCode: 405},
		{name: "no token", body: `{"name":"web-c","ip":"198.18.0.12"}`, token: "-", wantCode: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, func(o *Options) { o.Token = testToken })
			for _, body := range []string{
				`{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"2s"}`,
				`{"name":"web-d","port":80,"backend":"198.19.0.5:80","ttl":"3s"}`,
			} {
				if rec := do(h, http.MethodPost, PathRegister, body, testToken); rec.Code != 200 {
					t.Fatalf("setup: register %s = %d %s", body, rec.Code, rec.Body)
				}
			}
			before := tableJSON(t, reg)
			method, token := tc.method, testToken
			if method == "" {
				method = http.MethodPost
			}
			if tc.token == "-" {
				token = ""
			}
			rec := do(h, method, PathRenew, tc.body, token)
			if rec.Code != tc.wantCode {
				t.Fatalf("%s %s %s = %d %s, want %d", method, PathRenew, tc.body, rec.Code, rec.Body, tc.wantCode)
			}
			if tc.wantCode != 200 {
				if tc.wantField != "" {
					checkErrorBody(t, rec, tc.wantField)
				}
				if after := tableJSON(t, reg); after != before {
					t.Errorf("a refused renew changed the table:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			var req RenewRequest
			json.Unmarshal([]byte(tc.body), &req)
			if m := memberOf(t, rec.Body.Bytes(), req.Name); m.TTL == "" || m.Expires.IsZero() {
				t.Errorf("renew answer: %s has ttl %q expires %v, want both set", req.Name, m.TTL, m.Expires)
			}
		})
	}
}

func TestHandlerStatusLease(t *testing.T) {
	h, _ := testHandler(t, nil)
	if rec := do(h, http.MethodPost, PathRegister, `{"name":"web-c","ip":"198.18.0.12","backend":"198.19.0.4","ttl":"2s"}`, ""); rec.Code != 200 {
		t.Fatalf("register = %d %s", rec.Code, rec.Body)
	}
	rec := do(h, http.MethodGet, PathStatus, "", "")
	if rec.Code != 200 {
		t.Fatalf("GET %s = %d %s", PathStatus, rec.Code, rec.Body)
	}
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	type lease struct{ TTL, Expires string }
	got := map[string]lease{}
	for _, b := range st.Bindings {
		for _, m := range b.Members {
			l := lease{TTL: m.TTL}
			if !m.Expires.IsZero() {
				l.Expires = m.Expires.UTC().Format(time.RFC3339)
			}
			got[b.IP+"/"+m.Name] = l
		}
	}
	want := map[string]lease{
		"198.18.0.10/web-a":  {},
		"198.18.0.12/web-c":  {TTL: "2s", Expires: testNow.Add(2 * time.Second).Format(time.RFC3339)},
		"198.18.0.100/web-a": {},
		"198.18.0.100/web-b": {},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status leases (-want +got):\n%s", diff)
	}
	// Permanent members carry neither key.
	if n := strings.Count(rec.Body.String(), `"expires"`); n != 1 {
		t.Errorf("status has %d \"expires\" keys, want 1 (the leased member only):\n%s", n, rec.Body)
	}
}

func TestClientRenew(t *testing.T) {
	ctx := context.Background()
	h, _ := testHandler(t, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL, HTTP: srv.Client()}

	if _, err := c.Register(ctx, RegisterRequest{Name: "web-c", IP: "198.18.0.12", Backend: "198.19.0.4", TTL: "2s"}); err != nil {
		t.Fatalf("Register with ttl: %v", err)
	}
	b, err := c.Renew(ctx, RenewRequest{Name: "web-c", IP: "198.18.0.12"})
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	want := BindingView{IP: "198.18.0.12", Members: []MemberView{{Name: "web-c", Backend: "198.19.0.4", State: "active", TTL: "2s", Expires: testNow.Add(2 * time.Second), Cause: "register"}}}
	if diff := cmp.Diff(want, b, cmpopts.IgnoreFields(MemberView{}, "Since", "Reason")); diff != "" {
		t.Errorf("Renew (-want +got):\n%s", diff)
	}

	_, err = c.Renew(ctx, RenewRequest{Name: "web-c", IP: "198.18.0.13"})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != http.StatusNotFound || apiErr.Field != "ip" {
		t.Errorf("Renew of a lost lease = %v, want a 404 *APIError for field ip", err)
	}
}
