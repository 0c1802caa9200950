package registry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Addresses: the front subnet is 198.18.0.0/24, backends live in
// 198.19.0.0/24.
var (
	front = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	// front6 is an IPv6 front subnet, for the IPv6 cases.
	front6 = netip.MustParsePrefix("2001:db8:18::/64")

	ipA      = netip.MustParseAddr("198.18.0.10")
	ipB      = netip.MustParseAddr("198.18.0.11")
	ipShared = netip.MustParseAddr("198.18.0.100")

	beA = netip.MustParseAddrPort("198.19.0.2:0")
	beB = netip.MustParseAddrPort("198.19.0.3:0")
	beC = netip.MustParseAddrPort("198.19.0.4:0")

	t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 = t0.Add(time.Minute)
)

// cmpOpts compares netip values (unexported fields) with ==; time.Time
// values compare with their Equal method.
// cmpOpts compares tables; Reason is free text, checked where it matters
// (lease_test.go).
var cmpOpts = cmp.Options{cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}), cmpopts.IgnoreFields(Member{}, "Reason", "Cause")}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// newRegistry returns an in-memory registry on front whose clock reads t0,
// with setup registered.
func newRegistry(t testing.TB, setup ...Registration) (*Registry, *clock) {
	t.Helper()
	clk := &clock{t: t0}
	r, err := New(Options{Networks: front, Now: clk.Now})
	if err != nil {
		t.Fatalf("New() error: %v", err)
	}
	mustRegister(t, r, setup...)
	return r, clk
}

func mustRegister(t testing.TB, r *Registry, regs ...Registration) {
	t.Helper()
	for _, reg := range regs {
		if _, err := r.Register(reg); err != nil {
			t.Fatalf("Register(%+v) error: %v", reg, err)
		}
	}
}

// bindings returns a deep copy of every binding of t, in order.
func bindings(t *Table) []Binding {
	var out []Binding
	for _, b := range t.Bindings() {
		out = append(out, b.clone())
	}
	return out
}

// checkErr checks err against the wanted sentinel, FieldError field and
// message fragment; it reports whether err is nil.
func checkErr(t *testing.T, call string, err, wantErr error, wantField, wantMsg string) bool {
	t.Helper()
	if wantErr == nil {
		if err != nil {
			t.Fatalf("%s error: %v, want nil", call, err)
		}
		return true
	}
	if !errors.Is(err, wantErr) {
		t.Fatalf("%s error = %v, want errors.Is(err, %v)", call, err, wantErr)
	}
	if wantField != "" {
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("%s error = %v (%T), want a *FieldError for %q", call, err, err, wantField)
		}
		if fe.Field != wantField {
			t.Errorf("%s FieldError.Field = %q, want %q (error %v)", call, fe.Field, wantField, err)
		}
	}
	if wantMsg != "" && !strings.Contains(err.Error(), wantMsg) {
		t.Errorf("%s error = %q, want it to contain %q", call, err, wantMsg)
	}
	return false
}

func member(name string, be netip.AddrPort, s State, since time.Time) Member {
	return Member{Name: name, Backend: be, State: s, Since: since}
}

func TestRegister(t *testing.T) {
	k1 := Key{IP: ipA}
	k80 := Key{IP: ipShared, Port: 80}
	tests := []struct {
		name     string
		networks []netip.Prefix // nil means front
		setup    []Registration // registered at t0
		reg      Registration   // registered at t1

		want      Binding // the binding that Register returns
		wantErr   error
		wantField string
		wantMsg   string
		// wantTable is the table afterwards; nil means the table after
		// setup (unchanged), which every failing case must leave.
		wantTable []Binding
	}{
		// Mode 1: one IP per server computer.
		{
			name:      "mode 1 first member is active",
			reg:       Registration{Name: "web-a", IP: ipA, Backend: beA},
			want:      Binding{Key: k1, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: k1, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:      "mode 1 re-register updates backend",
			setup:     []Registration{{Name: "web-a", IP: ipA, Backend: beA}},
			reg:       Registration{Name: "web-a", IP: ipA, Backend: beB},
			want:      Binding{Key: k1, Members: []Member{member("web-a", beB, Active, t0)}},
			wantTable: []Binding{{Key: k1, Members: []Member{member("web-a", beB, Active, t0)}}},
		},
		{
			name:      "mode 1 second name conflicts",
			setup:     []Registration{{Name: "web-a", IP: ipA, Backend: beA}},
			reg:       Registration{Name: "web-b", IP: ipA, Backend: beB},
			wantErr:   ErrConflict,
			wantField: "ip",
			wantMsg:   "held by server web-a",
		},
		{
			name:  "mode 1 one member per IP",
			setup: []Registration{{Name: "web-a", IP: ipA, Backend: beA}},
			reg:   Registration{Name: "web-b", IP: ipB, Backend: beB},
			want:  Binding{Key: Key{IP: ipB}, Members: []Member{member("web-b", beB, Active, t1)}},
			wantTable: []Binding{
				{Key: k1, Members: []Member{member("web-a", beA, Active, t0)}},
				{Key: Key{IP: ipB}, Members: []Member{member("web-b", beB, Active, t1)}},
			},
		},
		{
			name:  "mode 1 and mode 2 on one IP are separate bindings",
			setup: []Registration{{Name: "web-a", IP: ipA, Backend: beA}},
			reg:   Registration{Name: "web-b", IP: ipA, Port: 80, Backend: beB},
			want:  Binding{Key: Key{IP: ipA, Port: 80}, Members: []Member{member("web-b", beB, Active, t1)}},
			wantTable: []Binding{
				{Key: k1, Members: []Member{member("web-a", beA, Active, t0)}},
				{Key: Key{IP: ipA, Port: 80}, Members: []Member{member("web-b", beB, Active, t1)}},
			},
		},

		// Mode 2: one shared IP, active/standby per port.
		{
			name:      "mode 2 first member defaults to active",
			reg:       Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
			want:      Binding{Key: k80, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: k80, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:  "mode 2 second member defaults to standby",
			setup: []Registration{{Name: "web-a", IP: ipShared, Port: 80, Backend: beA}},
			reg:   Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
			want: Binding{Key: k80, Members: []Member{
				member("web-a", beA, Active, t0), member("web-b", beB, Standby, t1),
			}},
			wantTable: []Binding{{Key: k80, Members: []Member{
				member("web-a", beA, Active, t0), member("web-b", beB, Standby, t1),
			}}},
		},
		{
			name:  "mode 2 defaults to active when only standbys",
			setup: []Registration{{Name: "web-a", IP: ipShared, Port: 80, Backend: beA, State: Standby}},
			reg:   Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
			want: Binding{Key: k80, Members: []Member{
				member("web-a", beA, Standby, t0), member("web-b", beB, Active, t1),
			}},
			wantTable: []Binding{{Key: k80, Members: []Member{
				member("web-a", beA, Standby, t0), member("web-b", beB, Active, t1),
			}}},
		},
		{
			name:      "mode 2 explicit standby first",
			reg:       Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA, State: Standby},
			want:      Binding{Key: k80, Members: []Member{member("web-a", beA, Standby, t1)}},
			wantTable: []Binding{{Key: k80, Members: []Member{member("web-a", beA, Standby, t1)}}},
		},
		{
			name: "mode 2 second explicit active conflicts",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
			},
			reg:       Registration{Name: "web-c", IP: ipShared, Port: 80, Backend: beC, State: Active},
			wantErr:   ErrConflict,
			wantField: "state",
			wantMsg:   "switch",
		},
		{
			name: "mode 2 standby re-registered as active conflicts",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
			},
			reg:       Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beB, State: Active},
			wantErr:   ErrConflict,
			wantField: "state",
			wantMsg:   "switch",
		},
		{
			name: "mode 2 re-register active keeps it active",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
			},
			reg: Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beC},
			want: Binding{Key: k80, Members: []Member{
				member("web-a", beC, Active, t0), member("web-b", beB, Standby, t0),
			}},
			wantTable: []Binding{{Key: k80, Members: []Member{
				member("web-a", beC, Active, t0), member("web-b", beB, Standby, t0),
			}}},
		},
		{
			name: "mode 2 re-register standby keeps it standby",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
			},
			reg: Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beC},
			want: Binding{Key: k80, Members: []Member{
				member("web-a", beA, Active, t0), member("web-b", beC, Standby, t0),
			}},
			wantTable: []Binding{{Key: k80, Members: []Member{
				member("web-a", beA, Active, t0), member("web-b", beC, Standby, t0),
			}}},
		},
		{
			name: "mode 2 active re-registered as standby",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
			},
			reg:       Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA, State: Standby},
			want:      Binding{Key: k80, Members: []Member{member("web-a", beA, Standby, t1)}},
			wantTable: []Binding{{Key: k80, Members: []Member{member("web-a", beA, Standby, t1)}}},
		},

		// Invalid requests.
		{name: "empty name", reg: Registration{IP: ipA, Backend: beA}, wantErr: ErrInvalid, wantField: "name"},
		{name: "long name", reg: Registration{Name: strings.Repeat("a", MaxNameLen+1), IP: ipA, Backend: beA}, wantErr: ErrInvalid, wantField: "name"},
		{name: "name with space", reg: Registration{Name: "web a", IP: ipA, Backend: beA}, wantErr: ErrInvalid, wantField: "name"},
		{name: "name starting with dash", reg: Registration{Name: "-web", IP: ipA, Backend: beA}, wantErr: ErrInvalid, wantField: "name"},
		{name: "missing ip", reg: Registration{Name: "web-a", Backend: beA}, wantErr: ErrInvalid, wantField: "ip"},
		{name: "unspecified ip", reg: Registration{Name: "web-a", IP: netip.IPv4Unspecified(), Backend: beA}, wantErr: ErrInvalid, wantField: "ip"},
		{name: "loopback ip", reg: Registration{Name: "web-a", IP: netip.MustParseAddr("127.0.0.1"), Backend: beA}, wantErr: ErrInvalid, wantField: "ip"},
		{name: "multicast ip", reg: Registration{Name: "web-a", IP: netip.MustParseAddr("224.0.0.1"), Backend: beA}, wantErr: ErrInvalid, wantField: "ip"},
		{
			name:      "ip outside networks",
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.19.0.10"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
			wantMsg:   "outside the front networks",
		},
		{
			name:      "network address",
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.0"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
			wantMsg:   "network or broadcast",
		},
		{
			name:      "broadcast address",
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.255"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
			wantMsg:   "network or broadcast",
		},
		{
			name:      "broadcast address of a /23",
			networks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.0/23")},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.1.255"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
		},
		{
			name:      "x.x.x.255 inside a /23 is a host",
			networks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.0/23")},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.255"), Backend: beA},
			want:      Binding{Key: Key{IP: netip.MustParseAddr("198.18.0.255")}, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: netip.MustParseAddr("198.18.0.255")}, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			// RFC 3021: both addresses of a /31 are hosts.
			name:      "lower address of a /31",
			networks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.0/31")},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.0"), Backend: beA},
			want:      Binding{Key: Key{IP: netip.MustParseAddr("198.18.0.0")}, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: netip.MustParseAddr("198.18.0.0")}, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:      "the address of a /32",
			networks:  []netip.Prefix{netip.MustParsePrefix("198.18.0.7/32")},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.0.7"), Backend: beA},
			want:      Binding{Key: Key{IP: netip.MustParseAddr("198.18.0.7")}, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: netip.MustParseAddr("198.18.0.7")}, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:      "second network",
			networks:  []netip.Prefix{front[0], netip.MustParsePrefix("198.18.1.0/24")},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("198.18.1.10"), Backend: beA},
			want:      Binding{Key: Key{IP: netip.MustParseAddr("198.18.1.10")}, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: netip.MustParseAddr("198.18.1.10")}, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:      "IPv6 front, IPv4 backend",
			networks:  []netip.Prefix{front[0], front6},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("2001:db8:18::10"), Backend: beA},
			want:      Binding{Key: Key{IP: netip.MustParseAddr("2001:db8:18::10")}, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: netip.MustParseAddr("2001:db8:18::10")}, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:      "IPv4 front, IPv6 backend",
			networks:  []netip.Prefix{front[0], front6},
			reg:       Registration{Name: "web-a", IP: ipA, Backend: netip.MustParseAddrPort("[2001:db8:19::2]:8080")},
			want:      Binding{Key: Key{IP: ipA}, Members: []Member{member("web-a", netip.MustParseAddrPort("[2001:db8:19::2]:8080"), Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: ipA}, Members: []Member{member("web-a", netip.MustParseAddrPort("[2001:db8:19::2]:8080"), Active, t1)}}},
		},
		{
			name:      "IPv6 mode 2",
			networks:  []netip.Prefix{front6},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("2001:db8:18::100"), Port: 80, Backend: beA},
			want:      Binding{Key: Key{IP: netip.MustParseAddr("2001:db8:18::100"), Port: 80}, Members: []Member{member("web-a", beA, Active, t1)}},
			wantTable: []Binding{{Key: Key{IP: netip.MustParseAddr("2001:db8:18::100"), Port: 80}, Members: []Member{member("web-a", beA, Active, t1)}}},
		},
		{
			name:      "IPv6 outside networks",
			networks:  []netip.Prefix{front[0], front6},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("2001:db8:19::10"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
			wantMsg:   "2001:db8:19::10 is outside the front networks",
		},
		{
			name:      "IPv6 with only IPv4 networks",
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("2001:db8:18::10"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
			wantMsg:   "outside the front networks",
		},
		{
			name:      "IPv6 subnet-router anycast",
			networks:  []netip.Prefix{front6},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("2001:db8:18::"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
			wantMsg:   "subnet-router anycast",
		},
		{
			name:      "IPv6 link-local with zone",
			networks:  []netip.Prefix{front6},
			reg:       Registration{Name: "web-a", IP: netip.MustParseAddr("fe80::1%eth0"), Backend: beA},
			wantErr:   ErrInvalid,
			wantField: "ip",
		},
		{name: "missing backend", reg: Registration{Name: "web-a", IP: ipA}, wantErr: ErrInvalid, wantField: "backend"},
		{name: "unspecified backend", reg: Registration{Name: "web-a", IP: ipA, Backend: netip.MustParseAddrPort("0.0.0.0:80")}, wantErr: ErrInvalid, wantField: "backend"},
		{name: "bad state", reg: Registration{Name: "web-a", IP: ipA, Backend: beA, State: "primary"}, wantErr: ErrInvalid, wantField: "state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nets := tc.networks
			if nets == nil {
				nets = front
			}
			clk := &clock{t: t0}
			r, err := New(Options{Networks: nets, Now: clk.Now})
			if err != nil {
				t.Fatalf("New() error: %v", err)
			}
			mustRegister(t, r, tc.setup...)
			before := bindings(r.Table())
			clk.Set(t1)

			got, err := r.Register(tc.reg)
			call := fmt.Sprintf("Register(%+v)", tc.reg)
			if checkErr(t, call, err, tc.wantErr, tc.wantField, tc.wantMsg) {
				if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", call, diff)
				}
			} else if diff := cmp.Diff(Binding{}, got, cmpOpts, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s returned a binding with its error (-want +got):\n%s", call, diff)
			}
			wantTable := tc.wantTable
			if wantTable == nil {
				wantTable = before
			}
			if diff := cmp.Diff(wantTable, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after %s mismatch (-want +got):\n%s", call, diff)
			}
		})
	}
}

// TestRegisterResultIsACopy checks that the binding that Register and
// Switch return does not alias the published snapshot.
func TestRegisterResultIsACopy(t *testing.T) {
	r, _ := newRegistry(t, Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA})
	k := Key{IP: ipShared, Port: 80}

	got, err := r.Register(Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beB})
	if err != nil {
		t.Fatalf("Register() error: %v", err)
	}
	got.Members[0].State = Standby
	got.Members[1].Backend = beC
	if m, _, ok := r.Lookup(ipShared, 80); !ok || m.Name != "web-a" || m.State != Active {
		t.Errorf("after modifying Register()'s result, Lookup() = %+v, %v; want web-a active", m, ok)
	}

	for _, to := range []string{"web-a", "web-b"} { // no-op, then a change
		got, err := r.Switch(k, to)
		if err != nil {
			t.Fatalf("Switch(%s, %s) error: %v", k, to, err)
		}
		for i := range got.Members {
			got.Members[i].State = Standby
		}
		if m, _, ok := r.Lookup(ipShared, 80); !ok || m.Name != to {
			t.Errorf("after modifying Switch(%s)'s result, Lookup() = %+v, %v; want %s", to, m, ok, to)
		}
	}
}

func TestDeregister(t *testing.T) {
	k80 := Key{IP: ipShared, Port: 80}
	setup := []Registration{
		{Name: "web-c", IP: ipShared, Backend: beC}, // every port of the shared IP
		{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
		{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
		{Name: "web-a", IP: ipA, Backend: beA},
	}
	tests := []struct {
		name      string
		member    string
		key       Key
		wantErr   error
		wantField string
		wantMsg   string
		wantTable []Binding // nil: unchanged
		// lookups after the call: port on ipShared → member name ("" = none).
		wantLookup map[uint16]string
	}{
		{name: "no such binding", member: "web-a", key: Key{IP: ipB}, wantErr: ErrNotFound, wantField: "ip", wantMsg: "nothing is registered on"},
		{name: "no such port", member: "web-a", key: Key{IP: ipShared, Port: 81}, wantErr: ErrNotFound, wantField: "port"},
		{name: "no such member", member: "web-z", key: k80, wantErr: ErrNotFound, wantField: "name", wantMsg: "web-z is not registered on"},
		{name: "member of another binding", member: "web-c", key: k80, wantErr: ErrNotFound},
		{name: "bad name", member: "web a", key: k80, wantErr: ErrInvalid, wantField: "name"},
		{
			name:   "last member removes binding",
			member: "web-a", key: Key{IP: ipA},
			wantTable: []Binding{
				{Key: Key{IP: ipShared}, Members: []Member{member("web-c", beC, Active, t0)}},
				{Key: k80, Members: []Member{member("web-a", beA, Active, t0), member("web-b", beB, Standby, t0)}},
			},
		},
		{
			name:   "standby",
			member: "web-b", key: k80,
			wantTable: []Binding{
				{Key: Key{IP: ipA}, Members: []Member{member("web-a", beA, Active, t0)}},
				{Key: Key{IP: ipShared}, Members: []Member{member("web-c", beC, Active, t0)}},
				{Key: k80, Members: []Member{member("web-a", beA, Active, t0)}},
			},
			wantLookup: map[uint16]string{80: "web-a", 81: "web-c"},
		},
		{
			name:   "active promotes nobody and does not fall back",
			member: "web-a", key: k80,
			wantTable: []Binding{
				{Key: Key{IP: ipA}, Members: []Member{member("web-a", beA, Active, t0)}},
				{Key: Key{IP: ipShared}, Members: []Member{member("web-c", beC, Active, t0)}},
				{Key: k80, Members: []Member{member("web-b", beB, Standby, t0)}},
			},
			wantLookup: map[uint16]string{80: "", 81: "web-c"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newRegistry(t, setup...)
			before := bindings(r.Table())
			clk.Set(t1)
			err := r.Deregister(tc.member, tc.key)
			call := fmt.Sprintf("Deregister(%q, %s)", tc.member, tc.key)
			checkErr(t, call, err, tc.wantErr, tc.wantField, tc.wantMsg)
			want := tc.wantTable
			if want == nil {
				want = before
			}
			if diff := cmp.Diff(want, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after %s mismatch (-want +got):\n%s", call, diff)
			}
			for port, wantName := range tc.wantLookup {
				m, k, ok := r.Lookup(ipShared, port)
				if wantName == "" {
					if ok {
						t.Errorf("Lookup(%s, %d) = %+v via %s, want no member", ipShared, port, m, k)
					}
					if k != (Key{IP: ipShared, Port: port}) {
						t.Errorf("Lookup(%s, %d) key = %s, want the exact binding", ipShared, port, k)
					}
					continue
				}
				if !ok || m.Name != wantName {
					t.Errorf("Lookup(%s, %d) = %+v, %v; want %s", ipShared, port, m, ok, wantName)
				}
			}
		})
	}
}

func TestDeregisterLastRemovesAddress(t *testing.T) {
	r, _ := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA})
	if err := r.Deregister("web-a", Key{IP: ipA}); err != nil {
		t.Fatalf("Deregister() error: %v", err)
	}
	if n := r.Table().Len(); n != 0 {
		t.Errorf("Table().Len() = %d after removing the only member, want 0", n)
	}
	if _, ok := r.Table().Addrs()[ipA]; ok {
		t.Errorf("Table().Addrs() still holds %s", ipA)
	}
	if _, _, ok := r.Lookup(ipA, 80); ok {
		t.Errorf("Lookup(%s, 80) ok after deregistering", ipA)
	}
}

func TestSwitch(t *testing.T) {
	k80 := Key{IP: ipShared, Port: 80}
	three := []Registration{
		{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
		{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
		{Name: "web-c", IP: ipShared, Port: 80, Backend: beC},
	}
	tests := []struct {
		name      string
		setup     []Registration
		deregs    []string // deregistered from k80 after setup
		key       Key
		to        string
		want      Binding
		wantErr   error
		wantField string
		wantMsg   string
		wantTable []Binding // nil: unchanged
	}{
		{name: "unknown binding", setup: three, key: Key{IP: ipShared, Port: 81}, to: "web-b", wantErr: ErrNotFound, wantField: "port", wantMsg: "nothing is registered on"},
		{name: "unknown member", setup: three, key: k80, to: "web-z", wantErr: ErrNotFound, wantField: "to", wantMsg: "web-z is not registered on"},
		{name: "bad name", setup: three, key: k80, to: "", wantErr: ErrInvalid, wantField: "to"},
		{
			name: "to the active is a no-op", setup: three, key: k80, to: "web-a",
			want: Binding{Key: k80, Members: []Member{
				member("web-a", beA, Active, t0), member("web-b", beB, Standby, t0), member("web-c", beC, Standby, t0),
			}},
		},
		{
			name: "to a standby", setup: three, key: k80, to: "web-c",
			want: Binding{Key: k80, Members: []Member{
				member("web-a", beA, Standby, t1), member("web-b", beB, Standby, t0), member("web-c", beC, Active, t1),
			}},
			wantTable: []Binding{{Key: k80, Members: []Member{
				member("web-a", beA, Standby, t1), member("web-b", beB, Standby, t0), member("web-c", beC, Active, t1),
			}}},
		},
		{
			name: "with no active", setup: three, deregs: []string{"web-a"}, key: k80, to: "web-b",
			want: Binding{Key: k80, Members: []Member{
				member("web-b", beB, Active, t1), member("web-c", beC, Standby, t0),
			}},
			wantTable: []Binding{{Key: k80, Members: []Member{
				member("web-b", beB, Active, t1), member("web-c", beC, Standby, t0),
			}}},
		},
		{
			name:  "mode 1 to its only member is a no-op",
			setup: []Registration{{Name: "web-a", IP: ipA, Backend: beA}}, key: Key{IP: ipA}, to: "web-a",
			want: Binding{Key: Key{IP: ipA}, Members: []Member{member("web-a", beA, Active, t0)}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newRegistry(t, tc.setup...)
			for _, name := range tc.deregs {
				if err := r.Deregister(name, k80); err != nil {
					t.Fatalf("Deregister(%s) error: %v", name, err)
				}
			}
			before := bindings(r.Table())
			clk.Set(t1)
			got, err := r.Switch(tc.key, tc.to)
			call := fmt.Sprintf("Switch(%s, %q)", tc.key, tc.to)
			if checkErr(t, call, err, tc.wantErr, tc.wantField, tc.wantMsg) {
				if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", call, diff)
				}
			}
			want := tc.wantTable
			if want == nil {
				want = before
			}
			if diff := cmp.Diff(want, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after %s mismatch (-want +got):\n%s", call, diff)
			}
		})
	}
}

func TestSwitchRoutesNewLookups(t *testing.T) {
	r, _ := newRegistry(t,
		Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
		Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
	)
	old := r.Table()
	if _, err := r.Switch(Key{IP: ipShared, Port: 80}, "web-b"); err != nil {
		t.Fatalf("Switch() error: %v", err)
	}
	if m, _, _ := r.Lookup(ipShared, 80); m.Name != "web-b" {
		t.Errorf("Lookup() after Switch = %s, want web-b", m.Name)
	}
	// A snapshot taken before the switch is immutable.
	if m, _, _ := old.Lookup(ipShared, 80); m.Name != "web-a" {
		t.Errorf("old snapshot Lookup() after Switch = %s, want web-a", m.Name)
	}
}

func TestLookup(t *testing.T) {
	ipStandby := netip.MustParseAddr("198.18.0.12")
	r, _ := newRegistry(t,
		Registration{Name: "web-x", IP: ipA, Backend: beC},
		Registration{Name: "web-a", IP: ipA, Port: 80, Backend: beA},
		Registration{Name: "web-b", IP: ipA, Port: 80, Backend: beB},
		Registration{Name: "web-b", IP: ipB, Port: 443, Backend: beB},
		Registration{Name: "web-x", IP: ipStandby, Backend: beC},
		Registration{Name: "web-s", IP: ipStandby, Port: 22, Backend: beA, State: Standby},
	)
	tests := []struct {
		name     string
		ip       netip.Addr
		port     uint16
		wantName string // "" = no member
		wantKey  Key
	}{
		{name: "exact before every-port", ip: ipA, port: 80, wantName: "web-a", wantKey: Key{IP: ipA, Port: 80}},
		{name: "every-port", ip: ipA, port: 8080, wantName: "web-x", wantKey: Key{IP: ipA}},
		{name: "port 0 is the every-port binding", ip: ipA, port: 0, wantName: "web-x", wantKey: Key{IP: ipA}},
		{name: "exact only", ip: ipB, port: 443, wantName: "web-b", wantKey: Key{IP: ipB, Port: 443}},
		{name: "other port without every-port", ip: ipB, port: 80, wantKey: Key{IP: ipB}},
		{name: "unknown ip", ip: ipShared, port: 80, wantKey: Key{IP: ipShared}},
		{name: "no active member, no fallback", ip: ipStandby, port: 22, wantKey: Key{IP: ipStandby, Port: 22}},
		{name: "every-port beside a standby-only port", ip: ipStandby, port: 23, wantName: "web-x", wantKey: Key{IP: ipStandby}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, k, ok := r.Lookup(tc.ip, tc.port)
			if ok != (tc.wantName != "") || m.Name != tc.wantName {
				t.Errorf("Lookup(%s, %d) = %q, %v; want %q", tc.ip, tc.port, m.Name, ok, tc.wantName)
			}
			if ok && m.State != Active {
				t.Errorf("Lookup(%s, %d) = %+v, want an active member", tc.ip, tc.port, m)
			}
			if k != tc.wantKey {
				t.Errorf("Lookup(%s, %d) key = %s, want %s", tc.ip, tc.port, k, tc.wantKey)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr bool
	}{
		{name: "simple", in: "web-a"},
		{name: "dots and underscores", in: "web_a.example"},
		{name: "digit first", in: "1web"},
		{name: "max length", in: strings.Repeat("a", MaxNameLen)},
		{name: "empty", in: "", wantErr: true},
		{name: "too long", in: strings.Repeat("a", MaxNameLen+1), wantErr: true},
		{name: "dot first", in: ".web", wantErr: true},
		{name: "slash", in: "web/a", wantErr: true},
		{name: "non-ASCII", in: "wéb", wantErr: true},
		{name: "newline", in: "web\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ValidateName(%q) = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateName(%q) = %v, want errors.Is(err, ErrInvalid)", tc.in, err)
			}
		})
	}
}

func TestKeyString(t *testing.T) {
	tests := []struct {
		key  Key
		want string
	}{
		{Key{IP: ipA}, "198.18.0.10:*"},
		{Key{IP: ipA, Port: 80}, "198.18.0.10:80"},
		{Key{IP: netip.MustParseAddr("2001:db8::1")}, "[2001:db8::1]:*"},
		{Key{IP: netip.MustParseAddr("2001:db8::1"), Port: 443}, "[2001:db8::1]:443"},
	}
	for _, tc := range tests {
		if got := tc.key.String(); got != tc.want {
			t.Errorf("Key%+v.String() = %q, want %q", tc.key, got, tc.want)
		}
	}
}

// applierCall is one call to an Applier.
type applierCall struct {
	op         string // "prepare" or "commit"
	prev, next *Table
}

// fakeApplier records Prepare and Commit calls; Prepare fails while err is
// set.
type fakeApplier struct {
	mu    sync.Mutex
	err   error
	calls []applierCall
}

func (a *fakeApplier) Prepare(prev, next *Table) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, applierCall{"prepare", prev, next})
	return a.err
}

func (a *fakeApplier) Commit(prev, next *Table) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, applierCall{"commit", prev, next})
}

// fakeStore is an in-memory Store that fails while err is set.
type fakeStore struct {
	mu    sync.Mutex
	t     *Table
	err   error
	saves int
}

func (s *fakeStore) Load() (*Table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t, nil
}

func (s *fakeStore) Save(t *Table) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.saves++
	if s.err != nil {
		return s.err
	}
	s.t = t
	return nil
}

func TestApplier(t *testing.T) {
	errApply := errors.New("stack says no")
	errSave := errors.New("disk full")
	type change struct {
		name string
		do   func(*Registry) error
	}
	changes := []change{
		{"register", func(r *Registry) error {
			_, err := r.Register(Registration{Name: "web-c", IP: ipB, Backend: beC})
			return err
		}},
		{"register standby", func(r *Registry) error {
			_, err := r.Register(Registration{Name: "web-c", IP: ipShared, Port: 80, Backend: beC})
			return err
		}},
		{"deregister", func(r *Registry) error { return r.Deregister("web-a", Key{IP: ipShared, Port: 80}) }},
		{"switch", func(r *Registry) error {
			_, err := r.Switch(Key{IP: ipShared, Port: 80}, "web-b")
			return err
		}},
	}
	tests := []struct {
		name       string
		applyErr   error
		saveErr    error
		wantErr    error
		wantCalls  []string // applier calls made by the change
		wantSaves  int
		wantChange bool
	}{
		{name: "success", wantCalls: []string{"prepare", "commit"}, wantSaves: 1, wantChange: true},
		{name: "applier fails", applyErr: errApply, wantErr: errApply, wantCalls: []string{"prepare"}, wantSaves: 0},
		{name: "store fails", saveErr: errSave, wantErr: errSave, wantCalls: []string{"prepare", "commit"}, wantSaves: 1},
	}
	for _, tc := range tests {
		for _, ch := range changes {
			t.Run(tc.name+"/"+ch.name, func(t *testing.T) {
				st := &fakeStore{}
				r, err := New(Options{Networks: front, Store: st, Now: (&clock{t: t0}).Now})
				if err != nil {
					t.Fatalf("New() error: %v", err)
				}
				mustRegister(t, r,
					Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: beA},
					Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: beB},
				)
				ap := &fakeApplier{}
				if err := r.SetApplier(ap); err != nil {
					t.Fatalf("SetApplier() error: %v", err)
				}
				// A watcher sees the change after it is published and
				// before the applier's Commit releases anything.
				var watched []applierCall
				r.Watch(func(prev, next *Table) {
					if r.snap.Load() != next {
						t.Errorf("watcher ran before the change was published")
					}
					if n := len(ap.calls); n == 0 || ap.calls[n-1].op != "prepare" {
						t.Errorf("watcher ran after Commit (applier calls %d)", n)
					}
					watched = append(watched, applierCall{"watch", prev, next})
				})
				prev := r.Table()
				before := bindings(prev)
				ap.calls, st.saves = nil, 0
				ap.err, st.err = tc.applyErr, tc.saveErr

				err = ch.do(r)
				if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Fatalf("%s error = %v, want %v", ch.name, err, tc.wantErr)
				}
				var ops []string
				for _, c := range ap.calls {
					ops = append(ops, c.op)
				}
				if diff := cmp.Diff(tc.wantCalls, ops); diff != "" {
					t.Fatalf("%s applier calls (-want +got):\n%s", ch.name, diff)
				}
				if tc.wantChange != (len(watched) == 1) {
					t.Errorf("%s: watcher ran %d times, want it to run iff the change succeeded (%v)", ch.name, len(watched), tc.wantChange)
				}
				if st.saves != tc.wantSaves {
					t.Errorf("%s made %d Save calls, want %d", ch.name, st.saves, tc.wantSaves)
				}
				first := ap.calls[0]
				if first.prev != prev {
					t.Errorf("Prepare prev is not the table before the change")
				}
				if diff := cmp.Diff(before, bindings(first.prev), cmpOpts); diff != "" {
					t.Errorf("Prepare prev was modified (-want +got):\n%s", diff)
				}
				if tc.wantChange {
					if r.Table() != first.next {
						t.Errorf("Prepare next is not the table published after the change")
					}
					if c := ap.calls[1]; c.prev != prev || c.next != first.next {
						t.Errorf("Commit(%p, %p), want Commit(prev %p, next %p)", c.prev, c.next, prev, first.next)
					}
					if cmp.Diff(before, bindings(r.Table()), cmpOpts) == "" {
						t.Errorf("%s did not change the table", ch.name)
					}
					return
				}
				if r.Table() != prev {
					t.Errorf("%s failed but published a new table", ch.name)
				}
				if diff := cmp.Diff(before, bindings(r.Table()), cmpOpts); diff != "" {
					t.Errorf("table after failed %s changed (-want +got):\n%s", ch.name, diff)
				}
				if len(ap.calls) == 2 {
					undo := ap.calls[1]
					if undo.prev != first.next || undo.next != first.prev {
						t.Errorf("undo = Commit(%p, %p), want Commit(%p, %p)", undo.prev, undo.next, first.next, first.prev)
					}
				}
			})
		}
	}
}

func TestSetApplier(t *testing.T) {
	r, _ := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA})
	ap := &fakeApplier{}
	if err := r.SetApplier(ap); err != nil {
		t.Fatalf("SetApplier() error: %v", err)
	}
	if len(ap.calls) != 1 || ap.calls[0].op != "prepare" {
		t.Fatalf("SetApplier() made applier calls %+v, want one Prepare", ap.calls)
	}
	if prev, next := ap.calls[0].prev, ap.calls[0].next; prev.Len() != 0 || next != r.Table() {
		t.Errorf("SetApplier() called Prepare(%d bindings, %p); want Prepare(empty, current table %p)", prev.Len(), next, r.Table())
	}

	// An applier that refuses the current table is not installed.
	bad := &fakeApplier{err: errors.New("no")}
	if err := r.SetApplier(bad); err == nil {
		t.Fatalf("SetApplier(failing) = nil, want an error")
	}
	if _, err := r.Register(Registration{Name: "web-b", IP: ipB, Backend: beB}); err != nil {
		t.Fatalf("Register() after a failed SetApplier: %v", err)
	}
	if len(bad.calls) != 1 || len(ap.calls) != 3 {
		t.Errorf("applier calls: failed applier %d (want 1), installed applier %d (want 3: prepare, prepare, commit)", len(bad.calls), len(ap.calls))
	}
}

// TestConcurrent runs writers on one mode-2 binding against lock-free
// readers. Each writer owns its names, so it knows which of them must be in
// the table after each of its own steps. Run it with -race.
func TestConcurrent(t *testing.T) {
	const (
		writers = 6
		names   = 3 // per writer
		steps   = 400
	)
	k := Key{IP: ipShared, Port: 80}
	st := &fakeStore{}
	r, err := New(Options{Networks: front, Store: st})
	if err != nil {
		t.Fatalf("New() error: %v", err)
	}
	if err := r.SetApplier(&fakeApplier{}); err != nil {
		t.Fatalf("SetApplier() error: %v", err)
	}

	// checkTable reports a binding with more than one active member or a
	// member twice.
	checkTable := func(tb *Table) error {
		for _, b := range tb.Bindings() {
			actives := 0
			seen := map[string]bool{}
			for _, m := range b.Members {
				if seen[m.Name] {
					return fmt.Errorf("binding %s: %s twice", b.Key, m.Name)
				}
				seen[m.Name] = true
				if m.State == Active {
					actives++
				}
			}
			if actives > 1 {
				return fmt.Errorf("binding %s: %d active members: %+v", b.Key, actives, b.Members)
			}
			if len(b.Members) == 0 {
				return fmt.Errorf("binding %s: empty", b.Key)
			}
		}
		return nil
	}
	has := func(tb *Table, name string) bool {
		b, ok := tb.Binding(k)
		return ok && b.index(name) >= 0
	}

	var (
		wg      sync.WaitGroup
		done    = make(chan struct{})
		errc    = make(chan error, writers+2)
		mine    = make([]map[string]bool, writers) // writer w's names now registered
		allName []string
	)
	for w := range writers {
		mine[w] = map[string]bool{}
		for n := range names {
			allName = append(allName, fmt.Sprintf("w%d-n%d", w, n))
		}
	}

	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for step := range steps {
				name := fmt.Sprintf("w%d-n%d", w, rng.IntN(names))
				var err error
				switch op := rng.IntN(4); op {
				case 0, 1:
					var s State
					if rng.IntN(4) == 0 {
						s = Active
					}
					be := netip.AddrPortFrom(beA.Addr(), uint16(1+rng.IntN(1000)))
					_, err = r.Register(Registration{Name: name, IP: ipShared, Port: 80, Backend: be, State: s})
					if err == nil {
						mine[w][name] = true
					} else if errors.Is(err, ErrConflict) {
						err = nil
					}
				case 2:
					err = r.Deregister(name, k)
					if mine[w][name] {
						delete(mine[w], name)
					} else if errors.Is(err, ErrNotFound) {
						err = nil
					}
				case 3:
					// Switch to anyone's name: it may be gone.
					_, err = r.Switch(k, allName[rng.IntN(len(allName))])
					if errors.Is(err, ErrNotFound) {
						err = nil
					}
				}
				if err != nil {
					errc <- fmt.Errorf("writer %d step %d: %v", w, step, err)
					return
				}
				tb := r.Table()
				if err := checkTable(tb); err != nil {
					errc <- fmt.Errorf("writer %d step %d: %v", w, step, err)
					return
				}
				for n := range names {
					name := fmt.Sprintf("w%d-n%d", w, n)
					if got := has(tb, name); got != mine[w][name] {
						errc <- fmt.Errorf("writer %d step %d: %s in table = %v, want %v", w, step, name, got, mine[w][name])
						return
					}
				}
			}
		}()
	}

	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				m, key, ok := r.Lookup(ipShared, 80)
				if ok && (m.State != Active || key != k) {
					errc <- fmt.Errorf("Lookup() = %+v via %s, want an active member of %s", m, key, k)
					return
				}
				if err := checkTable(r.Table()); err != nil {
					errc <- fmt.Errorf("reader: %v", err)
					return
				}
			}
		}()
	}

	wg.Wait()
	close(done)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	var want []string
	for w := range writers {
		for name := range mine[w] {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	var got []string
	if b, ok := r.Table().Binding(k); ok {
		for _, m := range b.Members {
			got = append(got, m.Name)
		}
	}
	slices.Sort(got)
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("members at the end (-want +got):\n%s", diff)
	}
	if st.t != r.Table() && (st.t != nil || r.Table().Len() != 0) {
		t.Errorf("the store's last saved table is not the published one")
	}
}
