package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestRegisterRefusesSelfBackend: a backend that would turn the gateway
// against itself (issue 12, point 3) is refused with ErrInvalid naming
// backend, and nothing changes: loopback (the gateway's control API,
// metrics and pprof), link-local, multicast, broadcast, unspecified, and
// the gateway's own front addresses (the table's, and those that
// Options.FrontAddr reports, such as the shared address).
func TestRegisterRefusesSelfBackend(t *testing.T) {
	shared := netip.MustParseAddr("198.18.0.200") // in no binding
	tests := []struct {
		name    string
		setup   []Registration
		backend string
		wantErr error
		wantMsg string
	}{
		{name: "loopback", backend: "127.0.0.1:7070", wantErr: ErrInvalid, wantMsg: "loopback"},
		{name: "loopback anywhere in 127/8", backend: "127.4.5.6", wantErr: ErrInvalid, wantMsg: "loopback"},
		{name: "IPv6 loopback", backend: "[::1]:80", wantErr: ErrInvalid, wantMsg: "loopback"},
		{name: "IPv4-mapped loopback", backend: "[::ffff:127.0.0.1]:80", wantErr: ErrInvalid, wantMsg: "loopback"},
		{name: "link-local", backend: "169.254.169.254:80", wantErr: ErrInvalid, wantMsg: "link-local"},
		{name: "IPv6 link-local", backend: "[fe80::1]:80", wantErr: ErrInvalid, wantMsg: "link-local"},
		{name: "multicast", backend: "239.1.2.3:80", wantErr: ErrInvalid, wantMsg: "multicast"},
		{name: "IPv6 multicast", backend: "[ff02::1]:80", wantErr: ErrInvalid, wantMsg: "multicast"},
		{name: "broadcast", backend: "255.255.255.255:80", wantErr: ErrInvalid, wantMsg: "broadcast"},
		{name: "front subnet broadcast", backend: "198.18.0.255:80", wantErr: ErrInvalid, wantMsg: "broadcast"},
		{name: "IPv6 unspecified", backend: "[::]:80", wantErr: ErrInvalid},
		{
			name:    "a mode-1 front IP",
			setup:   []Registration{{Name: "web-b", IP: ipB, Backend: beB}},
			backend: ipB.String() + ":80", wantErr: ErrInvalid, wantMsg: "front address",
		},
		{
			name:    "a mode-2 front IP",
			setup:   []Registration{{Name: "web-b", IP: ipShared, Port: 80, Backend: beB}},
			backend: ipShared.String(), wantErr: ErrInvalid, wantMsg: "front address",
		},
		{name: "the shared address, bindings or not", backend: shared.String() + ":443", wantErr: ErrInvalid, wantMsg: "front address"},
		{name: "a host on the front subnet", backend: "198.18.0.50:80"},
		{name: "a host elsewhere", backend: "198.19.0.2:80"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(Options{Networks: front, FrontAddr: func(a netip.Addr) bool { return a == shared }})
			if err != nil {
				t.Fatalf("New() error: %v", err)
			}
			mustRegister(t, r, tc.setup...)
			before := bindings(r.Table())
			be := netip.MustParseAddrPort(addPort(tc.backend))
			reg := Registration{Name: "web-a", IP: ipA, Backend: be}
			_, err = r.Register(reg)
			if checkErr(t, fmt.Sprintf("Register(backend %s)", tc.backend), err, tc.wantErr, "backend", tc.wantMsg) {
				return
			}
			if got := bindings(r.Table()); len(got) != len(before) {
				t.Errorf("a refused registration changed the table: %d bindings, want %d", len(got), len(before))
			}
		})
	}
}

// addPort gives a bare address port 0 (the client's port).
func addPort(s string) string {
	if _, err := netip.ParseAddrPort(s); err == nil {
		return s
	}
	return netip.AddrPortFrom(netip.MustParseAddr(s), 0).String()
}

// TestRegisterBatchRefusesSelfBackend: within one batch, a registration
// whose backend is a front address that an earlier one of the batch
// creates is refused, naming its index and backend; nothing is applied.
func TestRegisterBatchRefusesSelfBackend(t *testing.T) {
	r, _ := newRegistry(t)
	_, err := r.RegisterBatch([]Registration{
		{Name: "web-a", IP: ipA, Backend: beA},
		{Name: "web-b", IP: ipB, Backend: netip.AddrPortFrom(ipA, 80)},
	})
	var be *BatchError
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, ErrInvalid) {
		t.Fatalf("RegisterBatch = %v, want a *BatchError at index 1 that is ErrInvalid", err)
	}
	var fe *FieldError
	if !errors.As(be.Err, &fe) || fe.Field != "backend" {
		t.Errorf("RegisterBatch error %v: want field backend", err)
	}
	if n := r.Table().Len(); n != 0 {
		t.Errorf("a refused batch left %d bindings, want 0", n)
	}
}

// TestRegisterRefusesFrontIPOfABackend: a new front IP that is some
// member's backend address would loop that member's connections back into
// the gateway: refused, 409 naming ip and the member.
func TestRegisterRefusesFrontIPOfABackend(t *testing.T) {
	r, _ := newRegistry(t, Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: netip.MustParseAddrPort("198.18.0.20:80")})
	_, err := r.Register(Registration{Name: "web-b", IP: netip.MustParseAddr("198.18.0.20"), Backend: beB})
	checkErr(t, "Register(front IP 198.18.0.20, web-a's backend)", err, ErrConflict, "ip", "web-a")
}

// TestRestoreRefusesSelfBackend: a state file written before the check
// existed, holding a loopback backend, is refused with an error naming the
// binding, the member and the backend: the gateway does not start
// forwarding the front LAN to its own loopback.
func TestRestoreRefusesSelfBackend(t *testing.T) {
	data := `{"version":1,"bindings":[{"ip":"198.18.0.10","members":[
		{"name":"web-a","backend":"127.0.0.1:0","state":"active","since":"2026-01-02T03:04:05Z"}]}]}`
	tbl, err := DecodeTable([]byte(data))
	if err != nil {
		t.Fatalf("DecodeTable: %v", err)
	}
	_, err = New(Options{Networks: front, Store: &fakeStore{t: tbl}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("New with a loopback backend in the state file = %v, want an ErrInvalid", err)
	}
	for _, want := range []string{"198.18.0.10", `"web-a"`, "backend", "loopback"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error %q does not contain %q", err, want)
		}
	}
}
