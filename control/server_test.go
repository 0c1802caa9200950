package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vipmux/vipmux/registry"
)

var (
	testNow    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testShared = netip.MustParseAddr("198.18.0.100")
	testToken  = "s3cret-token"
)

// fakeConns counts connections per member name.
type fakeConns map[string]int64

func (f fakeConns) Conns(k registry.Key, name string) int64 { return f[k.String()+"/"+name] }

// testRegistry returns a registry on 198.18.0.0/24 holding
//
//	198.18.0.10:*   web-a 198.19.0.2     active
//	198.18.0.100:80 web-a 198.19.0.2:80  active
//	                web-b 198.19.0.3:80  standby
func testRegistry(t testing.TB) *registry.Registry {
	t.Helper()
	r, err := registry.New(registry.Options{
		Networks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		Now:      func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatalf("registry.New: %v", err)
	}
	for _, reg := range []registry.Registration{
		{Name: "web-a", IP: netip.MustParseAddr("198.18.0.10"), Backend: netip.MustParseAddrPort("198.19.0.2:0")},
		{Name: "web-a", IP: testShared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.2:80"), State: registry.Active},
		{Name: "web-b", IP: testShared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.3:80"), State: registry.Standby},
	} {
		if _, err := r.Register(reg); err != nil {
			t.Fatalf("Register(%+v): %v", reg, err)
		}
	}
	return r
}

// testHandler returns a handler over a fresh testRegistry; edit adjusts the
// options before NewHandler.
func testHandler(t testing.TB, edit func(*Options)) (http.Handler, *registry.Registry) {
	t.Helper()
	reg := testRegistry(t)
	opts := Options{
		Registry: reg,
		Shared:   testShared,
		Conns:    fakeConns{"198.18.0.100:80/web-a": 3},
		Logger:   slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&opts)
	}
	h, err := NewHandler(opts)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h, reg
}

// tableJSON is the registry's table in its state-file form, for before/after
// comparisons.
func tableJSON(t testing.TB, r *registry.Registry) string {
	t.Helper()
	data, err := json.Marshal(r.Table())
	if err != nil {
		t.Fatalf("marshal table: %v", err)
	}
	return string(data)
}

// do sends one request to h and returns the recorder.
func do(h http.Handler, method, path, body, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// checkErrorBody checks that rec is a JSON error answer naming wantField.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder, wantField string) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	var eb errorBody
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("error body %q: %v", rec.Body.String(), err)
	}
	if eb.Error == "" {
		t.Errorf("error body %q has no message", rec.Body.String())
	}
	if eb.Field != wantField {
		t.Errorf("error field = %q, want %q (body %s)", eb.Field, wantField, rec.Body.String())
	}
}

func intp(i int) *int { return &i }

func TestHandlerChanges(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		body   string
		want   any // decoded answer: BindingView or okBody
		wantTo func(t *testing.T, r *registry.Registry)
	}{
		{
			name: "register mode 1",
			path: PathRegister,
			body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`,
			want: BindingView{IP: "198.18.0.11", Port: 0, Members: []MemberView{
				{Name: "web-c", Backend: "198.19.0.4", State: "active", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.11", 22, "web-c", "198.19.0.4:0"),
		},
		{
			name: "register mode 2 on shared address",
			path: PathRegister,
			body: `{"name":"web-c","port":443,"backend":"198.19.0.4:8443"}`,
			want: BindingView{IP: "198.18.0.100", Port: 443, Members: []MemberView{
				{Name: "web-c", Backend: "198.19.0.4:8443", State: "active", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.100", 443, "web-c", "198.19.0.4:8443"),
		},
		{
			name: "register standby with explicit ip",
			path: PathRegister,
			body: `{"name":"web-c","ip":"198.18.0.100","port":80,"backend":"198.19.0.4:80","state":"standby"}`,
			want: BindingView{IP: "198.18.0.100", Port: 80, Members: []MemberView{
				{Name: "web-a", Backend: "198.19.0.2:80", State: "active", Since: testNow, Connections: 3},
				{Name: "web-b", Backend: "198.19.0.3:80", State: "standby", Since: testNow},
				{Name: "web-c", Backend: "198.19.0.4:80", State: "standby", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.100", 80, "web-a", "198.19.0.2:80"),
		},
		{
			name: "register IPv6 backend",
			path: PathRegister,
			body: `{"name":"web-c","ip":"198.18.0.12","backend":"[2001:db8::4]:8080"}`,
			want: BindingView{IP: "198.18.0.12", Port: 0, Members: []MemberView{
				{Name: "web-c", Backend: "[2001:db8::4]:8080", State: "active", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.12", 80, "web-c", "[2001:db8::4]:8080"),
		},
		{
			name: "register again updates backend",
			path: PathRegister,
			body: `{"name":"web-a","ip":"198.18.0.10","backend":"198.19.0.9"}`,
			want: BindingView{IP: "198.18.0.10", Port: 0, Members: []MemberView{
				{Name: "web-a", Backend: "198.19.0.9", State: "active", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.10", 80, "web-a", "198.19.0.9:0"),
		},
		{
			name:   "deregister mode 1",
			path:   PathDeregister,
			body:   `{"name":"web-a","ip":"198.18.0.10"}`,
			want:   okBody{OK: true},
			wantTo: wantNoLookup("198.18.0.10", 80),
		},
		{
			name:   "deregister active on shared address",
			path:   PathDeregister,
			body:   `{"name":"web-a","port":80}`,
			want:   okBody{OK: true},
			wantTo: wantNoLookup("198.18.0.100", 80),
		},
		{
			name: "switch on shared address",
			path: PathSwitch,
			body: `{"port":80,"to":"web-b"}`,
			want: BindingView{IP: "198.18.0.100", Port: 80, Members: []MemberView{
				{Name: "web-a", Backend: "198.19.0.2:80", State: "standby", Since: testNow, Connections: 3},
				{Name: "web-b", Backend: "198.19.0.3:80", State: "active", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.100", 80, "web-b", "198.19.0.3:80"),
		},
		{
			name: "switch with explicit ip",
			path: PathSwitch,
			body: `{"ip":"198.18.0.100","port":80,"to":"web-b"}`,
			want: BindingView{IP: "198.18.0.100", Port: 80, Members: []MemberView{
				{Name: "web-a", Backend: "198.19.0.2:80", State: "standby", Since: testNow, Connections: 3},
				{Name: "web-b", Backend: "198.19.0.3:80", State: "active", Since: testNow},
			}},
			wantTo: wantLookup("198.18.0.100", 80, "web-b", "198.19.0.3:80"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, nil)
			rec := do(h, http.MethodPost, tc.path, tc.body, "")
			if rec.Code != http.StatusOK {
				t.Fatalf("POST %s %s: code %d, want 200; body %s", tc.path, tc.body, rec.Code, rec.Body.String())
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			got := reflect.New(reflect.TypeOf(tc.want))
			if err := json.Unmarshal(rec.Body.Bytes(), got.Interface()); err != nil {
				t.Fatalf("decode answer %s: %v", rec.Body.String(), err)
			}
			// Reasons and causes are the registry's; TestHandlerStatus checks that they show.
			if diff := cmp.Diff(tc.want, got.Elem().Interface(), cmpopts.IgnoreFields(MemberView{}, "Reason", "Cause")); diff != "" {
				t.Errorf("POST %s %s answer (-want +got):\n%s", tc.path, tc.body, diff)
			}
			tc.wantTo(t, reg)
		})
	}
}

func wantLookup(ip string, port uint16, wantName, wantBackend string) func(*testing.T, *registry.Registry) {
	return func(t *testing.T, r *registry.Registry) {
		t.Helper()
		m, _, ok := r.Lookup(netip.MustParseAddr(ip), port)
		if !ok || m.Name != wantName || m.Backend != netip.MustParseAddrPort(wantBackend) {
			t.Errorf("Lookup(%s, %d) = %+v, %v; want %s at %s", ip, port, m, ok, wantName, wantBackend)
		}
	}
}

func wantNoLookup(ip string, port uint16) func(*testing.T, *registry.Registry) {
	return func(t *testing.T, r *registry.Registry) {
		t.Helper()
		if m, _, ok := r.Lookup(netip.MustParseAddr(ip), port); ok {
			t.Errorf("Lookup(%s, %d) = %+v, want no member", ip, port, m)
		}
	}
}

func TestHandlerStatus(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Options)
		want Status
	}{
		{
			name: "with shared and conns",
			want: Status{Shared: "198.18.0.100", Bindings: []BindingView{
				{IP: "198.18.0.10", Port: 0, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2", State: "active", Since: testNow, Reason: "registered", Cause: "register"},
				}},
				{IP: "198.18.0.100", Port: 80, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2:80", State: "active", Since: testNow, Connections: 3, Reason: "registered", Cause: "register"},
					{Name: "web-b", Backend: "198.19.0.3:80", State: "standby", Since: testNow, Reason: "registered", Cause: "register"},
				}},
			}, Events: []EventView{}, Summary: Summary{Bindings: 2, Members: 3, HeldIPs: 2}},
		},
		{
			name: "no shared no conns",
			edit: func(o *Options) { o.Shared, o.Conns = netip.Addr{}, nil },
			want: Status{Bindings: []BindingView{
				{IP: "198.18.0.10", Port: 0, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2", State: "active", Since: testNow, Reason: "registered", Cause: "register"},
				}},
				{IP: "198.18.0.100", Port: 80, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2:80", State: "active", Since: testNow, Reason: "registered", Cause: "register"},
					{Name: "web-b", Backend: "198.19.0.3:80", State: "standby", Since: testNow, Reason: "registered", Cause: "register"},
				}},
			}, Events: []EventView{}, Summary: Summary{Bindings: 2, Members: 3, HeldIPs: 2}},
		},
		{
			name: "after automatic failover",
			edit: func(o *Options) {
				k := registry.Key{IP: testShared, Port: 80}
				if err := o.Registry.SetHealth(k, "web-a", false, "health check failed: connection refused"); err != nil {
					panic(err)
				}
			},
			want: Status{Shared: "198.18.0.100", Bindings: []BindingView{
				{IP: "198.18.0.10", Port: 0, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2", State: "active", Since: testNow, Reason: "registered", Cause: "register"},
				}},
				{IP: "198.18.0.100", Port: 80, Members: []MemberView{
					{Name: "web-a", Backend: "198.19.0.2:80", State: "standby", Since: testNow, Connections: 3,
						Down: true, DownCause: "health", FailedOver: true, Reason: "health check failed: connection refused", Cause: "failover"},
					{Name: "web-b", Backend: "198.19.0.3:80", State: "active", Since: testNow,
						Reason: "automatic failover: web-a health check failed: connection refused", Cause: "failover"},
				}},
			}, Events: []EventView{
				{Time: testNow, Binding: "198.18.0.100:80", Member: "web-a", What: "down", Why: "health check failed: connection refused", Cause: "health"},
				{Time: testNow, Binding: "198.18.0.100:80", Member: "web-a", What: "demoted", Why: "health check failed: connection refused", Cause: "failover"},
				{Time: testNow, Binding: "198.18.0.100:80", Member: "web-b", What: "promoted", Why: "automatic failover: web-a health check failed: connection refused", Cause: "failover"},
			}, Summary: Summary{Bindings: 2, Members: 3, Down: 1, HeldIPs: 2}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, tc.edit)
			rec := do(h, http.MethodGet, PathStatus, "", "")
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s: code %d, want 200; body %s", PathStatus, rec.Code, rec.Body.String())
			}
			var got Status
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode %s: %v", rec.Body.String(), err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("GET %s (-want +got):\n%s", PathStatus, diff)
			}
			if tc.want.Shared == "" && strings.Contains(rec.Body.String(), `"shared"`) {
				t.Errorf("GET %s = %s, want no shared key", PathStatus, rec.Body.String())
			}
		})
	}
}

func TestHandlerStatusEmpty(t *testing.T) {
	reg, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(Options{Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rec := do(h, http.MethodGet, PathStatus, "", "")
	if got, want := strings.TrimSpace(rec.Body.String()), `{"bindings":[],"events":[],"summary":{"bindings":0,"members":0,"down":0,"draining":0,"held_ips":0}}`; rec.Code != 200 || got != want {
		t.Errorf("GET %s on empty table = %d %s, want 200 %s", PathStatus, rec.Code, got, want)
	}
}

func TestHandlerErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name      string
		edit      func(*Options)
		method    string // default POST
		path      string
		body      string
		wantCode  int
		wantField string
		wantAllow string
	}{
		// Body framing.
		{name: "malformed JSON", path: PathRegister, body: `{"name":"web-c",`, wantCode: 400},
		{name: "syntax error", path: PathRegister, body: `{"name" "web-c"}`, wantCode: 400},
		{name: "empty body", path: PathRegister, body: ``, wantCode: 400},
		{name: "not an object", path: PathRegister, body: `["web-c"]`, wantCode: 400},
		{name: "unknown field", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4","colour":"red"}`, wantCode: 400, wantField: "colour"},
		{name: "unknown field deregister", path: PathDeregister, body: `{"name":"web-a","ip":"198.18.0.10","force":true}`, wantCode: 400, wantField: "force"},
		{name: "unknown field switch", path: PathSwitch, body: `{"port":80,"to":"web-b","now":1}`, wantCode: 400, wantField: "now"},
		{name: "trailing object", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}{}`, wantCode: 400},
		{name: "trailing garbage", path: PathDeregister, body: `{"name":"web-a","ip":"198.18.0.10"}x`, wantCode: 400},
		{name: "port is a string", path: PathRegister, body: `{"name":"web-c","port":"80","backend":"198.19.0.4"}`, wantCode: 400, wantField: "port"},
		{name: "port is fractional", path: PathSwitch, body: `{"port":80.5,"to":"web-b"}`, wantCode: 400, wantField: "port"},
		{name: "name is a number", path: PathRegister, body: `{"name":7,"ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 400, wantField: "name"},
		{name: "body over 64 KiB", path: PathRegister, body: `{"name":"` + strings.Repeat("x", 70000) + `"}`, wantCode: 413},
		{name: "whitespace over 64 KiB after object", path: PathDeregister, body: `{"name":"web-a","ip":"198.18.0.10"}` + strings.Repeat(" ", 70000), wantCode: 413},

		// Field values.
		{name: "empty name", path: PathRegister, body: `{"name":"","ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 400, wantField: "name"},
		{name: "missing name", path: PathRegister, body: `{"ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 400, wantField: "name"},
		{name: "name of 64 characters", path: PathRegister, body: `{"name":"` + long + `","ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 400, wantField: "name"},
		{name: "name with slash", path: PathRegister, body: `{"name":"web/c","ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 400, wantField: "name"},
		{name: "ip outside networks", path: PathRegister, body: `{"name":"web-c","ip":"198.17.0.1","backend":"198.19.0.4"}`, wantCode: 400, wantField: "ip"},
		{name: "ip is broadcast", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.255","backend":"198.19.0.4"}`, wantCode: 400, wantField: "ip"},
		{name: "ip is not an ip", path: PathRegister, body: `{"name":"web-c","ip":"web-c.example","backend":"198.19.0.4"}`, wantCode: 400, wantField: "ip"},
		{name: "mode 1 without ip", path: PathRegister, body: `{"name":"web-c","backend":"198.19.0.4"}`, wantCode: 400, wantField: "ip"},
		{name: "backend hostname", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"db.example:80"}`, wantCode: 400, wantField: "backend"},
		{name: "backend missing", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11"}`, wantCode: 400, wantField: "backend"},
		{name: "backend bad port", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4:99999"}`, wantCode: 400, wantField: "backend"},
		{name: "backend IPv6 port without brackets", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"2001:db8::4:80:"}`, wantCode: 400, wantField: "backend"},
		{name: "backend unspecified", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"0.0.0.0:80"}`, wantCode: 400, wantField: "backend"},
		{name: "bad state", path: PathRegister, body: `{"name":"web-c","port":80,"backend":"198.19.0.4","state":"primary"}`, wantCode: 400, wantField: "state"},
		{name: "port 0", path: PathRegister, body: `{"name":"web-c","port":0,"backend":"198.19.0.4"}`, wantCode: 400, wantField: "port"},
		{name: "port 70000", path: PathRegister, body: `{"name":"web-c","port":70000,"backend":"198.19.0.4"}`, wantCode: 400, wantField: "port"},
		{name: "port negative", path: PathRegister, body: `{"name":"web-c","port":-80,"backend":"198.19.0.4"}`, wantCode: 400, wantField: "port"},
		{name: "deregister port 70000", path: PathDeregister, body: `{"name":"web-a","port":70000}`, wantCode: 400, wantField: "port"},
		{name: "switch port 0", path: PathSwitch, body: `{"port":0,"to":"web-b"}`, wantCode: 400, wantField: "port"},
		{name: "switch without port", path: PathSwitch, body: `{"ip":"198.18.0.100","to":"web-b"}`, wantCode: 400, wantField: "port"},
		{name: "switch empty to", path: PathSwitch, body: `{"port":80,"to":""}`, wantCode: 400, wantField: "to"},
		{
			name: "register port without shared", edit: func(o *Options) { o.Shared = netip.Addr{} },
			path: PathRegister, body: `{"name":"web-c","port":80,"backend":"198.19.0.4"}`, wantCode: 400, wantField: "shared.address",
		},
		{
			name: "deregister port without shared", edit: func(o *Options) { o.Shared = netip.Addr{} },
			path: PathDeregister, body: `{"name":"web-a","port":80}`, wantCode: 400, wantField: "shared.address",
		},
		{
			name: "switch port without shared", edit: func(o *Options) { o.Shared = netip.Addr{} },
			path: PathSwitch, body: `{"port":80,"to":"web-b"}`, wantCode: 400, wantField: "shared.address",
		},

		// Conflicts with the table.
		{name: "same ip by second server", path: PathRegister, body: `{"name":"web-b","ip":"198.18.0.10","backend":"198.19.0.3"}`, wantCode: 409, wantField: "ip"},
		{name: "second active", path: PathRegister, body: `{"name":"web-c","port":80,"backend":"198.19.0.4:80","state":"active"}`, wantCode: 409, wantField: "state"},
		{name: "switch to unknown member", path: PathSwitch, body: `{"port":80,"to":"web-z"}`, wantCode: 404, wantField: "to"},
		{name: "switch unknown binding", path: PathSwitch, body: `{"port":81,"to":"web-a"}`, wantCode: 404, wantField: "port"},
		{name: "deregister unknown member", path: PathDeregister, body: `{"name":"web-z","ip":"198.18.0.10"}`, wantCode: 404, wantField: "name"},
		{name: "deregister unknown binding", path: PathDeregister, body: `{"name":"web-a","ip":"198.18.0.11"}`, wantCode: 404, wantField: "ip"},

		// Routing.
		{name: "GET register", method: http.MethodGet, path: PathRegister, wantCode: 405, wantAllow: "POST"},
		{name: "PUT switch", method: http.MethodPut, path: PathSwitch, body: `{"port":80,"to":"web-b"}`, wantCode: 405, wantAllow: "POST"},
		{name: "POST status", path: PathStatus, body: `{}`, wantCode: 405, wantAllow: "GET"},
		{name: "unknown path", method: http.MethodGet, path: "/v1/nothing", wantCode: 404},
		{name: "path with trailing slash", path: PathRegister + "/", body: `{}`, wantCode: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, tc.edit)
			before := tableJSON(t, reg)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			rec := do(h, method, tc.path, tc.body, "")
			if rec.Code != tc.wantCode {
				t.Errorf("%s %s %.200s: code %d, want %d; body %s", method, tc.path, tc.body, rec.Code, tc.wantCode, rec.Body.String())
			}
			checkErrorBody(t, rec, tc.wantField)
			if got := rec.Header().Get("Allow"); got != tc.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tc.wantAllow)
			}
			if after := tableJSON(t, reg); after != before {
				t.Errorf("table changed:\nbefore %s\n after %s", before, after)
			}
		})
	}
}

func TestHandlerErrorMessages(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(*Options)
		path     string
		body     string
		wantText []string
	}{
		{name: "shared not configured", edit: func(o *Options) { o.Shared = netip.Addr{} }, path: PathRegister, body: `{"name":"web-c","port":80,"backend":"198.19.0.4"}`, wantText: []string{"[shared] address"}},
		{name: "unknown field", path: PathRegister, body: `{"colour":"red"}`, wantText: []string{"unknown field"}},
		{name: "conflict names holder", path: PathRegister, body: `{"name":"web-b","ip":"198.18.0.10","backend":"198.19.0.3"}`, wantText: []string{"web-a"}},
		{name: "too large", path: PathRegister, body: strings.Repeat(" ", MaxRequestBody+1), wantText: []string{"65536"}},
		{name: "trailing", path: PathRegister, body: `{}{}`, wantText: []string{"trailing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testHandler(t, tc.edit)
			rec := do(h, http.MethodPost, tc.path, tc.body, "")
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
				t.Fatalf("decode %s: %v", rec.Body.String(), err)
			}
			for _, want := range tc.wantText {
				if !strings.Contains(eb.Error, want) {
					t.Errorf("error %q does not mention %q", eb.Error, want)
				}
			}
		})
	}
}

func TestHandlerToken(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		header   string // Authorization
		wantCode int
		wantDiff bool // the table changes
	}{
		{name: "register without token", method: "POST", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, wantCode: 401},
		{name: "register wrong token", method: "POST", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, header: "Bearer wrong", wantCode: 401},
		{name: "register token prefix", method: "POST", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, header: "Bearer " + testToken[:4], wantCode: 401},
		{name: "register basic scheme", method: "POST", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, header: "Basic " + testToken, wantCode: 401},
		{name: "register bare token", method: "POST", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, header: testToken, wantCode: 401},
		{name: "deregister without token", method: "POST", path: PathDeregister, body: `{"name":"web-a","ip":"198.18.0.10"}`, wantCode: 401},
		{name: "switch wrong token", method: "POST", path: PathSwitch, body: `{"port":80,"to":"web-b"}`, header: "Bearer x", wantCode: 401},
		{name: "status without token", method: "GET", path: PathStatus, wantCode: 401},
		{name: "unknown path without token", method: "GET", path: "/v1/secret", wantCode: 401},
		{name: "register right token", method: "POST", path: PathRegister, body: `{"name":"web-c","ip":"198.18.0.11","backend":"198.19.0.4"}`, header: "Bearer " + testToken, wantCode: 200, wantDiff: true},
		{name: "switch right token lower-case scheme", method: "POST", path: PathSwitch, body: `{"port":80,"to":"web-b"}`, header: "bearer " + testToken, wantCode: 200, wantDiff: true},
		{name: "status right token", method: "GET", path: PathStatus, header: "Bearer " + testToken, wantCode: 200},
		{name: "healthz without token", method: "GET", path: PathHealth, wantCode: 200},
		{name: "healthz wrong token", method: "GET", path: PathHealth, header: "Bearer wrong", wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := testHandler(t, func(o *Options) { o.Token = testToken })
			before := tableJSON(t, reg)
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Errorf("%s %s with Authorization %q: code %d, want %d; body %s", tc.method, tc.path, tc.header, rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantCode == 401 {
				checkErrorBody(t, rec, "")
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate header")
				}
			}
			if changed := tableJSON(t, reg) != before; changed != tc.wantDiff {
				t.Errorf("table changed = %v, want %v", changed, tc.wantDiff)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	h, _ := testHandler(t, nil)
	rec := do(h, http.MethodGet, PathHealth, "", "")
	if got, want := strings.TrimSpace(rec.Body.String()), `{"ok":true}`; rec.Code != 200 || got != want {
		t.Errorf("GET %s = %d %s, want 200 %s", PathHealth, rec.Code, got, want)
	}
}

// failingStore makes every change fail with an error the API cannot map.
type failingStore struct{}

func (failingStore) Load() (*registry.Table, error) { return nil, nil }
func (failingStore) Save(*registry.Table) error     { return errors.New("disk on fire") }

func TestHandlerInternalError(t *testing.T) {
	reg, err := registry.New(registry.Options{Store: failingStore{}})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	h, err := NewHandler(Options{Registry: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rec := do(h, http.MethodPost, PathRegister, `{"name":"web-a","ip":"198.18.0.10","backend":"198.19.0.2"}`, "")
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("register with failing store: code %d, want 500; body %s", rec.Code, rec.Body.String())
	}
	checkErrorBody(t, rec, "")
	if !strings.Contains(logs.String(), "disk on fire") {
		t.Errorf("log %q does not mention the internal error", logs.String())
	}
}

func TestHandlerLogsChanges(t *testing.T) {
	var logs bytes.Buffer
	h, _ := testHandler(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	for _, c := range []struct{ path, body string }{
		{PathRegister, `{"name":"web-c","port":80,"backend":"198.19.0.4:80"}`},
		{PathSwitch, `{"port":80,"to":"web-c"}`},
		{PathDeregister, `{"name":"web-c","port":80}`},
	} {
		if rec := do(h, http.MethodPost, c.path, c.body, ""); rec.Code != 200 {
			t.Fatalf("POST %s %s: %d %s", c.path, c.body, rec.Code, rec.Body.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	want := []string{
		"msg=register name=web-c binding=198.18.0.100:80 backend=198.19.0.4:80 state=standby",
		"msg=switch name=web-c binding=198.18.0.100:80 backend=198.19.0.4:80 state=active",
		"msg=deregister name=web-c binding=198.18.0.100:80 backend=198.19.0.4:80 state=active",
	}
	if len(lines) != len(want) {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), len(want), logs.String())
	}
	for i := range want {
		if !strings.Contains(lines[i], "level=INFO "+want[i]) {
			t.Errorf("log line %d = %q, want it to contain %q", i, lines[i], want[i])
		}
	}
}

func TestNewHandlerOptions(t *testing.T) {
	reg := testRegistry(t)
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{name: "ok", opts: Options{Registry: reg, Logger: log}},
		{name: "no registry", opts: Options{Logger: log}, wantErr: true},
		{name: "no logger", opts: Options{Registry: reg}, wantErr: true},
		{name: "shared with zone", opts: Options{Registry: reg, Logger: log, Shared: netip.MustParseAddr("fe80::1%eth0")}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewHandler(tc.opts)
			if (err != nil) != tc.wantErr {
				t.Errorf("NewHandler(%+v) error = %v, want error %v", tc.opts, err, tc.wantErr)
			}
		})
	}
}

// serveForTest runs Serve on a loopback listener; stop cancels it and
// returns Serve's error (failing the test if it does not return within
// 10 s).
func serveForTest(t *testing.T) (c *Client, addr string, stop func() error) {
	t.Helper()
	h, _ := testHandler(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h) }()
	stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return 10 s after cancel")
			return nil
		}
	}
	return &Client{BaseURL: "http://" + ln.Addr().String()}, ln.Addr().String(), stop
}

func TestServe(t *testing.T) {
	c, addr, stop := serveForTest(t)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("Status while serving: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Errorf("listener %s still accepts after Serve returned", addr)
	}
}

// A connection that never sent a request (a client's spare one) does not
// hold up the shutdown: Serve closes it and returns nil, where
// http.Server.Shutdown alone would count it as busy for 5 s, past
// shutdownTimeout, and fail.
func TestServeClosesUnusedConnections(t *testing.T) {
	c, addr, stop := serveForTest(t)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("Status while serving: %v", err)
	}
	spare, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer spare.Close()
	// Status again on a new connection: the server accepts in order, so
	// it has accepted the spare one by the time this one is answered.
	fresh := &Client{BaseURL: c.BaseURL, HTTP: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	if _, err := fresh.Status(context.Background()); err != nil {
		t.Fatalf("Status while serving: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve after cancel with an unused connection open = %v, want nil", err)
	}
	spare.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := spare.Read(make([]byte, 1)); err == nil {
		t.Errorf("read on the unused connection after shutdown = %d bytes, want it closed", n)
	}
}
