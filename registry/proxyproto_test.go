package registry

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProxyProtocol(t *testing.T) {
	tests := []struct {
		in      string
		want    ProxyProtocol
		wantErr bool
	}{
		{in: "", want: ProxyNone},
		{in: "none", want: ProxyNone},
		{in: "v1", want: ProxyV1},
		{in: "v2", want: ProxyV2},
		{in: "v3", wantErr: true},
		{in: "V2", wantErr: true},
		{in: "2", wantErr: true},
		{in: " v1", wantErr: true},
		{in: "true", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseProxyProtocol(tc.in)
		if tc.wantErr {
			checkErr(t, "ParseProxyProtocol("+tc.in+")", err, ErrInvalid, "proxy_protocol", "use \"v1\", \"v2\" or \"none\"")
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseProxyProtocol(%q) = %q, %v; want %q, nil", tc.in, got, err, tc.want)
		}
	}
	for p, want := range map[ProxyProtocol]string{ProxyNone: "none", ProxyV1: "v1", ProxyV2: "v2"} {
		if got := p.String(); got != want {
			t.Errorf("ProxyProtocol(%q).String() = %q, want %q", string(p), got, want)
		}
	}
}

func TestRegisterProxyProtocol(t *testing.T) {
	r, _ := newRegistry(t)
	be80 := netip.MustParseAddrPort("198.19.0.2:80")
	be80b := netip.MustParseAddrPort("198.19.0.3:80")
	mustRegister(t, r,
		Registration{Name: "web-a", IP: ipA, Backend: beA, ProxyProtocol: ProxyV1},
		Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: be80, ProxyProtocol: ProxyV2},
		Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: be80b},
	)
	lookup := func(ip netip.Addr, port uint16) Member {
		t.Helper()
		m, _, ok := r.Lookup(ip, port)
		if !ok {
			t.Fatalf("Lookup(%s, %d) found nothing", ip, port)
		}
		return m
	}
	if m := lookup(ipA, 443); m.ProxyProtocol != ProxyV1 {
		t.Errorf("mode 1 member ProxyProtocol = %q, want v1", m.ProxyProtocol)
	}
	if m := lookup(ipShared, 80); m.Name != "web-a" || m.ProxyProtocol != ProxyV2 {
		t.Errorf("mode 2 active = %s with %q, want web-a with v2", m.Name, m.ProxyProtocol)
	}
	// Each member of a port has its own setting: after the switch, new
	// connections go to web-b, which sends no header.
	if _, err := r.Switch(Key{IP: ipShared, Port: 80}, "web-b"); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if m := lookup(ipShared, 80); m.Name != "web-b" || m.ProxyProtocol != ProxyNone {
		t.Errorf("after switch: active = %s with %q, want web-b with none", m.Name, m.ProxyProtocol)
	}
	// The switch did not touch web-a's setting.
	b, _ := r.Table().Binding(Key{IP: ipShared, Port: 80})
	if i := b.index("web-a"); i < 0 || b.Members[i].ProxyProtocol != ProxyV2 {
		t.Errorf("after switch: web-a = %+v, want it kept with v2", b.Members)
	}

	// Registering again replaces the setting, like the backend.
	mustRegister(t, r, Registration{Name: "web-a", IP: ipA, Backend: beA, ProxyProtocol: ProxyV2})
	if m := lookup(ipA, 443); m.ProxyProtocol != ProxyV2 {
		t.Errorf("after re-register with v2: ProxyProtocol = %q, want v2", m.ProxyProtocol)
	}
	mustRegister(t, r, Registration{Name: "web-a", IP: ipA, Backend: beA})
	if m := lookup(ipA, 443); m.ProxyProtocol != ProxyNone {
		t.Errorf("after re-register without: ProxyProtocol = %q, want none", m.ProxyProtocol)
	}

	// A bad value changes nothing.
	before := bindings(r.Table())
	_, err := r.Register(Registration{Name: "web-a", IP: ipA, Backend: beA, ProxyProtocol: "v3"})
	checkErr(t, "Register(proxy v3)", err, ErrInvalid, "proxy_protocol", `"v3"`)
	if got := bindings(r.Table()); len(got) != len(before) || lookup(ipA, 443).ProxyProtocol != ProxyNone {
		t.Errorf("a refused registration changed the table: %+v", got)
	}
}

func TestProxyProtocolPersisted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	r, err := New(Options{Networks: front, Store: &FileStore{Path: path}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mustRegister(t, r,
		Registration{Name: "web-a", IP: ipA, Backend: beA, ProxyProtocol: ProxyV2},
		Registration{Name: "web-b", IP: ipB, Backend: beB, ProxyProtocol: ProxyV1},
		Registration{Name: "web-c", IP: ipShared, Port: 80, Backend: beC},
	)
	// The snapshot (the first save) and the journal (the later ones) hold
	// each member once.
	var all []byte
	for _, p := range []string{path, path + ".journal"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, data...)
	}
	if s := string(all); !strings.Contains(s, `"proxy_protocol":"v2"`) || !strings.Contains(s, `"proxy_protocol":"v1"`) || strings.Count(s, "proxy_protocol") != 2 {
		t.Errorf("state file = %s\nwant proxy_protocol v2 and v1, and no key for the member without it", s)
	}
	r2, err := New(Options{Networks: front, Store: &FileStore{Path: path}})
	if err != nil {
		t.Fatalf("New restoring %s: %v", path, err)
	}
	for ip, want := range map[netip.Addr]ProxyProtocol{ipA: ProxyV2, ipB: ProxyV1, ipShared: ProxyNone} {
		if m, _, ok := r2.Lookup(ip, 80); !ok || m.ProxyProtocol != want {
			t.Errorf("restored Lookup(%s, 80) = %+v, %v; want ProxyProtocol %q", ip, m, ok, want)
		}
	}

	// A state file written before the field existed loads with none.
	old := filepath.Join(t.TempDir(), "old.json")
	if err := os.WriteFile(old, []byte(validState), 0o600); err != nil {
		t.Fatal(err)
	}
	r3, err := New(Options{Networks: front, Store: &FileStore{Path: old}})
	if err != nil {
		t.Fatalf("New restoring a state file without proxy_protocol: %v", err)
	}
	for _, b := range r3.Table().Bindings() {
		for _, m := range b.Members {
			if m.ProxyProtocol != ProxyNone {
				t.Errorf("old state: %s member %s ProxyProtocol = %q, want none", b.Key, m.Name, m.ProxyProtocol)
			}
		}
	}

	// A bad stored value is refused on restore, naming the field.
	bad := filepath.Join(t.TempDir(), "bad.json")
	badState := strings.Replace(validState, `"state": "standby"`, `"state": "standby", "proxy_protocol": "v9"`, 1)
	if err := os.WriteFile(bad, []byte(badState), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Networks: front, Store: &FileStore{Path: bad}}); err == nil || !strings.Contains(err.Error(), "proxy_protocol") {
		t.Errorf("New restoring proxy_protocol v9 = %v, want an error naming proxy_protocol", err)
	}
}
