package registry

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	k1  = Key{IP: ipA}
	k80 = Key{IP: ipShared, Port: 80}

	be80A = netip.MustParseAddrPort("198.19.0.2:80")
	be80B = netip.MustParseAddrPort("198.19.0.3:80")
	be80C = netip.MustParseAddrPort("198.19.0.4:80")
)

// leased returns m with a lease of ttl that runs out at expires.
func leased(m Member, ttl time.Duration, expires time.Time) Member {
	m.TTL, m.Expires = ttl, expires
	return m
}

// events returns what, member for each event, for comparisons.
func eventList(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.What+" "+e.Member+" "+e.Binding.String()+": "+e.Why)
	}
	return out
}

func TestRegisterTTL(t *testing.T) {
	tests := []struct {
		name        string
		ttl         time.Duration
		wantErr     error
		wantExpires time.Time
	}{
		{name: "permanent", ttl: 0},
		{name: "min", ttl: MinTTL, wantExpires: t0.Add(MinTTL)},
		{name: "2s", ttl: 2 * time.Second, wantExpires: t0.Add(2 * time.Second)},
		{name: "max", ttl: MaxTTL, wantExpires: t0.Add(MaxTTL)},
		{name: "below min", ttl: MinTTL - time.Nanosecond, wantErr: ErrInvalid},
		{name: "above max", ttl: MaxTTL + time.Nanosecond, wantErr: ErrInvalid},
		{name: "negative", ttl: -time.Second, wantErr: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newRegistry(t)
			_, err := r.Register(Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: tc.ttl})
			if !checkErr(t, "Register", err, tc.wantErr, "ttl", "") {
				if r.Table().Len() != 0 {
					t.Errorf("after a refused Register, the table has %d bindings, want 0", r.Table().Len())
				}
				return
			}
			want := []Binding{{Key: k1, Members: []Member{leased(member("web-a", beA, Active, t0), tc.ttl, tc.wantExpires)}}}
			if diff := cmp.Diff(want, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after Register(ttl %v) (-want +got):\n%s", tc.ttl, diff)
			}
		})
	}
}

func TestRegisterAgainChangesLease(t *testing.T) {
	r, clk := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: 10 * time.Second})
	steps := []struct {
		at          time.Time
		ttl         time.Duration
		wantTTL     time.Duration
		wantExpires time.Time
	}{
		{at: t0.Add(5 * time.Second), ttl: 10 * time.Second, wantTTL: 10 * time.Second, wantExpires: t0.Add(15 * time.Second)},
		{at: t0.Add(6 * time.Second), ttl: 0, wantTTL: 0}, // permanent from now on
		{at: t0.Add(7 * time.Second), ttl: time.Second, wantTTL: time.Second, wantExpires: t0.Add(8 * time.Second)},
	}
	for _, s := range steps {
		clk.Set(s.at)
		b, err := r.Register(Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: s.ttl})
		if err != nil {
			t.Fatalf("Register(ttl %v) at %v: %v", s.ttl, s.at, err)
		}
		if m := b.Members[0]; m.TTL != s.wantTTL || !m.Expires.Equal(s.wantExpires) {
			t.Errorf("Register(ttl %v) at t0+%v: TTL %v Expires %v, want %v %v", s.ttl, s.at.Sub(t0), m.TTL, m.Expires, s.wantTTL, s.wantExpires)
		}
	}
}

func TestRenew(t *testing.T) {
	const ttl = 10 * time.Second
	tests := []struct {
		name      string
		setup     []Registration
		expireAt  time.Time // if set, Expire runs at this time before Renew
		at        time.Time
		renew     string
		key       Key
		wantErr   error
		wantField string
		want      []Binding
		wantWhy   string // Reason of the renewed member
		wantLook  string // who Lookup(k) finds after the Renew; "" nobody
	}{
		{
			name:      "nothing on the ip",
			renew:     "web-a",
			key:       k1,
			wantErr:   ErrNotFound,
			wantField: "ip",
		},
		{
			name:      "nothing on the port",
			setup:     []Registration{{Name: "web-a", IP: ipShared, Port: 8080, Backend: be80A, TTL: ttl}},
			renew:     "web-a",
			key:       k80,
			wantErr:   ErrNotFound,
			wantField: "port",
		},
		{
			name:      "not a member",
			setup:     []Registration{{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl}},
			renew:     "web-b",
			key:       k80,
			wantErr:   ErrNotFound,
			wantField: "name",
		},
		{
			name:      "bad name",
			renew:     "-x",
			key:       k1,
			wantErr:   ErrInvalid,
			wantField: "name",
		},
		{
			name:      "no lease",
			setup:     []Registration{{Name: "web-a", IP: ipA, Backend: beA}},
			renew:     "web-a",
			key:       k1,
			wantErr:   ErrInvalid,
			wantField: "ttl",
		},
		{
			name:  "extends the lease from now",
			setup: []Registration{{Name: "web-a", IP: ipA, Backend: beA, TTL: ttl}},
			at:    t0.Add(5 * time.Second),
			renew: "web-a",
			key:   k1,
			want: []Binding{{Key: k1, Members: []Member{
				leased(member("web-a", beA, Active, t0), ttl, t0.Add(15*time.Second)),
			}}},
			wantWhy:  "registered",
			wantLook: "web-a",
		},
		{
			name: "a member its lease marked down is up again",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl},
			},
			expireAt: t0.Add(ttl),
			at:       t0.Add(12 * time.Second),
			renew:    "web-a",
			key:      k80,
			want: []Binding{{Key: k80, Members: []Member{
				leased(member("web-a", be80A, Active, t0.Add(12*time.Second)), ttl, t0.Add(22*time.Second)),
			}}},
			wantWhy:  "lease renewed",
			wantLook: "web-a",
		},
		{
			name: "a failed-over active comes back as standby",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B},
			},
			expireAt: t0.Add(ttl),
			at:       t0.Add(12 * time.Second),
			renew:    "web-a",
			key:      k80,
			want: []Binding{{Key: k80, Members: []Member{
				func() Member {
					m := leased(member("web-a", be80A, Standby, t0.Add(12*time.Second)), ttl, t0.Add(22*time.Second))
					m.FailedOver = true
					return m
				}(),
				member("web-b", be80B, Active, t0.Add(ttl)),
			}}},
			wantWhy:  "lease renewed",
			wantLook: "web-b",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newRegistry(t, tc.setup...)
			if !tc.expireAt.IsZero() {
				clk.Set(tc.expireAt)
				if n := r.Expire(); n != 1 {
					t.Fatalf("Expire at t0+%v = %d, want 1", tc.expireAt.Sub(t0), n)
				}
			}
			if !tc.at.IsZero() {
				clk.Set(tc.at)
			}
			before := r.Table()
			b, err := r.Renew(tc.renew, tc.key)
			if !checkErr(t, "Renew", err, tc.wantErr, tc.wantField, "") {
				if r.Table() != before {
					t.Errorf("a refused Renew changed the table")
				}
				return
			}
			if diff := cmp.Diff(tc.want, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after Renew(%s, %s) (-want +got):\n%s", tc.renew, tc.key, diff)
			}
			if diff := cmp.Diff(tc.want[0], b, cmpOpts); diff != "" {
				t.Errorf("Renew(%s, %s) result (-want +got):\n%s", tc.renew, tc.key, diff)
			}
			for _, m := range b.Members {
				if m.Name == tc.renew && m.Reason != tc.wantWhy {
					t.Errorf("after Renew, %s has Reason %q, want %q", m.Name, m.Reason, tc.wantWhy)
				}
			}
			got, _, ok := r.Lookup(tc.key.IP, 80)
			if ok != (tc.wantLook != "") || got.Name != tc.wantLook {
				t.Errorf("Lookup(%s, 80) after Renew = %q, %v; want %q", tc.key.IP, got.Name, ok, tc.wantLook)
			}
		})
	}
}

func TestExpire(t *testing.T) {
	const ttl = 10 * time.Second
	tExp := t0.Add(ttl)
	failedOver := func(m Member) Member { m.FailedOver, m.Down, m.DownCause = true, true, DownLease; return m }
	down := func(m Member) Member { m.Down, m.DownCause = true, DownLease; return m }
	tests := []struct {
		name       string
		setup      []Registration
		at         time.Time
		wantN      int
		want       []Binding
		wantEvents []string
		wantReason map[string]string // member → Reason
		wantLook   map[Key]string    // who Lookup(key.IP, 80) finds; "" nobody
	}{
		{
			name:     "mode 1 before the lease runs out",
			setup:    []Registration{{Name: "web-a", IP: ipA, Backend: beA, TTL: ttl}},
			at:       tExp.Add(-time.Nanosecond),
			wantN:    0,
			want:     []Binding{{Key: k1, Members: []Member{leased(member("web-a", beA, Active, t0), ttl, tExp)}}},
			wantLook: map[Key]string{k1: "web-a"},
		},
		{
			name:       "mode 1 member removed and its binding gone",
			setup:      []Registration{{Name: "web-a", IP: ipA, Backend: beA, TTL: ttl}, {Name: "web-b", IP: ipB, Backend: beB}},
			at:         tExp,
			wantN:      1,
			want:       []Binding{{Key: Key{IP: ipB}, Members: []Member{member("web-b", beB, Active, t0)}}},
			wantEvents: []string{"removed web-a 198.18.0.10:*: lease expired"},
			wantLook:   map[Key]string{k1: "", {IP: ipB}: "web-b"},
		},
		{
			name: "mode 2 active down, first healthy standby promoted",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B, TTL: ttl},
				{Name: "web-c", IP: ipShared, Port: 80, Backend: be80C},
			},
			at:    tExp,
			wantN: 2,
			want: []Binding{{Key: k80, Members: []Member{
				failedOver(leased(member("web-a", be80A, Standby, tExp), ttl, tExp)),
				down(leased(member("web-b", be80B, Standby, tExp), ttl, tExp)),
				member("web-c", be80C, Active, tExp),
			}}},
			wantEvents: []string{
				"down web-a 198.18.0.100:80: lease expired",
				"down web-b 198.18.0.100:80: lease expired",
				"demoted web-a 198.18.0.100:80: lease expired",
				"promoted web-c 198.18.0.100:80: automatic failover: web-a lease expired",
			},
			wantReason: map[string]string{"web-a": "lease expired", "web-b": "lease expired", "web-c": "automatic failover: web-a lease expired"},
			wantLook:   map[Key]string{k80: "web-c"},
		},
		{
			name: "mode 2 standby expires, active serves on",
			setup: []Registration{
				{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A},
				{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B, TTL: ttl},
			},
			at:    tExp,
			wantN: 1,
			want: []Binding{{Key: k80, Members: []Member{
				member("web-a", be80A, Active, t0),
				down(leased(member("web-b", be80B, Standby, tExp), ttl, tExp)),
			}}},
			wantEvents: []string{"down web-b 198.18.0.100:80: lease expired"},
			wantLook:   map[Key]string{k80: "web-a"},
		},
		{
			name:       "mode 2 no healthy standby: nobody serves",
			setup:      []Registration{{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl}},
			at:         tExp.Add(time.Hour),
			wantN:      1,
			want:       []Binding{{Key: k80, Members: []Member{down(leased(member("web-a", be80A, Active, tExp.Add(time.Hour)), ttl, tExp))}}},
			wantEvents: []string{"down web-a 198.18.0.100:80: lease expired"},
			wantReason: map[string]string{"web-a": "lease expired"},
			wantLook:   map[Key]string{k80: ""},
		},
		{
			name:     "permanent members never expire",
			setup:    []Registration{{Name: "web-a", IP: ipA, Backend: beA}, {Name: "web-a", IP: ipShared, Port: 80, Backend: be80A}},
			at:       t0.Add(1000 * time.Hour),
			wantN:    0,
			want:     []Binding{{Key: k1, Members: []Member{member("web-a", beA, Active, t0)}}, {Key: k80, Members: []Member{member("web-a", be80A, Active, t0)}}},
			wantLook: map[Key]string{k1: "web-a", k80: "web-a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := newRegistry(t, tc.setup...)
			clk.Set(tc.at)
			if n := r.Expire(); n != tc.wantN {
				t.Errorf("Expire at t0+%v = %d, want %d", tc.at.Sub(t0), n, tc.wantN)
			}
			if diff := cmp.Diff(tc.want, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after Expire (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantEvents, eventList(r.Events())); diff != "" {
				t.Errorf("Events() after Expire (-want +got):\n%s", diff)
			}
			for _, b := range r.Table().Bindings() {
				for _, m := range b.Members {
					if want, ok := tc.wantReason[m.Name]; ok && m.Reason != want {
						t.Errorf("%s on %s: Reason %q, want %q", m.Name, b.Key, m.Reason, want)
					}
				}
			}
			for k, want := range tc.wantLook {
				got, _, ok := r.Lookup(k.IP, 80)
				if ok != (want != "") || got.Name != want {
					t.Errorf("Lookup(%s, 80) after Expire = %q, %v; want %q", k.IP, got.Name, ok, want)
				}
			}
			// Expire is idempotent: a lease that ended ends once.
			before, events := r.Table(), len(r.Events())
			if n := r.Expire(); n != 0 {
				t.Errorf("second Expire = %d, want 0", n)
			}
			if r.Table() != before || len(r.Events()) != events {
				t.Errorf("second Expire changed the table or recorded events")
			}
		})
	}
}

func TestExpireReleasesAddress(t *testing.T) {
	r, clk := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: time.Second})
	a := &fakeApplier{}
	if err := r.SetApplier(a); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(time.Second))
	if n := r.Expire(); n != 1 {
		t.Fatalf("Expire = %d, want 1", n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	last := a.calls[len(a.calls)-1]
	if _, held := last.next.Addrs()[ipA]; last.op != "commit" || held {
		t.Errorf("last applier call = %s with %s held %v, want commit of a table without it", last.op, ipA, held)
	}
}

// TestExpireSaveFails (issue 12 point 8): an expiry whose save fails
// takes effect in memory all the same, is counted, and is saved by the
// next retry once the disk works again.
func TestExpireSaveFails(t *testing.T) {
	st := &fakeStore{}
	clk := &clock{t: t0}
	r, err := New(Options{Networks: front, Now: clk.Now, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: time.Second})
	st.mu.Lock()
	st.err = errors.New("disk full")
	st.mu.Unlock()
	clk.Set(t0.Add(time.Second))
	if n := r.Expire(); n != 1 {
		t.Errorf("Expire whose save failed = %d, want 1", n)
	}
	if _, _, ok := r.Lookup(ipA, 80); ok {
		t.Errorf("Expire whose save failed left the member routed; want it gone in memory")
	}
	if !r.Unsaved() || r.SaveFailures() != 1 {
		t.Errorf("after the failed save: Unsaved %v, SaveFailures %d, want true, 1", r.Unsaved(), r.SaveFailures())
	}
	if err := r.retrySave(); err == nil {
		t.Errorf("retrySave on a full disk: nil error")
	}
	if !r.Unsaved() || r.SaveFailures() != 2 {
		t.Errorf("after a failed retry: Unsaved %v, SaveFailures %d, want true, 2", r.Unsaved(), r.SaveFailures())
	}
	if _, _, ok := r.Lookup(ipA, 80); ok {
		t.Errorf("a failed retry brought the expired member back")
	}
	st.mu.Lock()
	st.err = nil
	st.mu.Unlock()
	if err := r.retrySave(); err != nil {
		t.Fatalf("retrySave after the disk recovered: %v", err)
	}
	st.mu.Lock()
	_, saved := st.t.Binding(Key{IP: ipA})
	st.mu.Unlock()
	if saved || r.Unsaved() {
		t.Errorf("after a successful retry: saved table holds the expired binding %v, Unsaved %v; want neither", saved, r.Unsaved())
	}
}

func TestRestoreRestartsLeases(t *testing.T) {
	st := &fakeStore{}
	r1, err := New(Options{Networks: front, Now: func() time.Time { return t0 }, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r1,
		Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: 10 * time.Second},
		Registration{Name: "web-b", IP: ipB, Backend: beB},
	)
	// The gateway was down for an hour: leases run from the restart.
	restart := t0.Add(time.Hour)
	clk := &clock{t: restart}
	r2, err := New(Options{Networks: front, Now: clk.Now, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	want := []Binding{
		{Key: k1, Members: []Member{leased(member("web-a", beA, Active, t0), 10*time.Second, restart.Add(10*time.Second))}},
		{Key: Key{IP: ipB}, Members: []Member{member("web-b", beB, Active, t0)}},
	}
	if diff := cmp.Diff(want, bindings(r2.Table()), cmpOpts); diff != "" {
		t.Errorf("restored table (-want +got):\n%s", diff)
	}
	if n := r2.Expire(); n != 0 {
		t.Errorf("Expire right after the restore = %d, want 0", n)
	}
	clk.Set(restart.Add(10 * time.Second))
	if n := r2.Expire(); n != 1 {
		t.Errorf("Expire one TTL after the restore = %d, want 1", n)
	}
}

func TestRunExpiry(t *testing.T) {
	r, clk := newRegistry(t, Registration{Name: "web-a", IP: ipA, Backend: beA, TTL: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.RunExpiry(ctx, time.Millisecond) }()
	clk.Set(t0.Add(time.Second))
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, _, ok := r.Lookup(ipA, 80); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("RunExpiry did not end the lease within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RunExpiry after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunExpiry did not return within 5s of cancel")
	}
}

func TestSetHealth(t *testing.T) {
	t2 := t0.Add(2 * time.Minute)
	two := []Registration{
		{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A},
		{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B},
	}
	type report struct {
		at   time.Time
		name string
		up   bool
	}
	tests := []struct {
		name       string
		failback   bool
		setup      []Registration
		reports    []report
		key        Key
		wantErr    error
		wantField  string
		want       []Binding
		wantEvents []string
		wantLook   string

		// lateFailback turns failback on with SetFailback after New.
		lateFailback bool
	}{
		{
			name:      "nothing on the port",
			reports:   []report{{t1, "web-a", false}},
			key:       k80,
			wantErr:   ErrNotFound,
			wantField: "port",
		},
		{
			name:      "not a member",
			setup:     two,
			reports:   []report{{t1, "web-c", false}},
			key:       k80,
			wantErr:   ErrNotFound,
			wantField: "name",
		},
		{
			name:    "up while up is a no-op",
			setup:   two,
			reports: []report{{t1, "web-a", true}},
			key:     k80,
			want: []Binding{{Key: k80, Members: []Member{
				member("web-a", be80A, Active, t0), member("web-b", be80B, Standby, t0),
			}}},
			wantLook: "web-a",
		},
		{
			name:    "active down fails over",
			setup:   two,
			reports: []report{{t1, "web-a", false}},
			key:     k80,
			want: []Binding{{Key: k80, Members: []Member{
				{Name: "web-a", Backend: be80A, State: Standby, Since: t1, Down: true, DownCause: DownHealth, FailedOver: true},
				member("web-b", be80B, Active, t1),
			}}},
			wantEvents: []string{
				"down web-a 198.18.0.100:80: connect refused",
				"demoted web-a 198.18.0.100:80: connect refused",
				"promoted web-b 198.18.0.100:80: automatic failover: web-a connect refused",
			},
			wantLook: "web-b",
		},
		{
			name:    "recovered former active stays standby",
			setup:   two,
			reports: []report{{t1, "web-a", false}, {t2, "web-a", true}},
			key:     k80,
			want: []Binding{{Key: k80, Members: []Member{
				{Name: "web-a", Backend: be80A, State: Standby, Since: t2, FailedOver: true},
				member("web-b", be80B, Active, t1),
			}}},
			wantLook: "web-b",
		},
		{
			name:     "failback makes the recovered former active active again",
			failback: true,
			setup:    two,
			reports:  []report{{t1, "web-a", false}, {t2, "web-a", true}},
			key:      k80,
			want: []Binding{{Key: k80, Members: []Member{
				member("web-a", be80A, Active, t2),
				member("web-b", be80B, Standby, t2),
			}}},
			wantLook: "web-a",
		},
		{
			name:         "failback turned on by SetFailback",
			lateFailback: true,
			setup:        two,
			reports:      []report{{t1, "web-a", false}, {t2, "web-a", true}},
			key:          k80,
			want: []Binding{{Key: k80, Members: []Member{
				member("web-a", be80A, Active, t2),
				member("web-b", be80B, Standby, t2),
			}}},
			wantLook: "web-a",
		},
		{
			name:    "standby down: nothing moves",
			setup:   two,
			reports: []report{{t1, "web-b", false}},
			key:     k80,
			want: []Binding{{Key: k80, Members: []Member{
				member("web-a", be80A, Active, t0),
				{Name: "web-b", Backend: be80B, State: Standby, Since: t1, Down: true, DownCause: DownHealth},
			}}},
			wantEvents: []string{"down web-b 198.18.0.100:80: connect refused"},
			wantLook:   "web-a",
		},
		{
			name:    "every member down: nobody serves, first to recover is promoted",
			setup:   two,
			reports: []report{{t1, "web-b", false}, {t1, "web-a", false}, {t2, "web-b", true}},
			key:     k80,
			want: []Binding{{Key: k80, Members: []Member{
				{Name: "web-a", Backend: be80A, State: Standby, Since: t2, Down: true, DownCause: DownHealth, FailedOver: true},
				member("web-b", be80B, Active, t2),
			}}},
			wantLook: "web-b",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: t0}
			r, err := New(Options{Networks: front, Now: clk.Now, Failback: tc.failback})
			if err != nil {
				t.Fatal(err)
			}
			if tc.lateFailback {
				r.SetFailback(true)
			}
			mustRegister(t, r, tc.setup...)
			var err2 error
			for _, rep := range tc.reports {
				clk.Set(rep.at)
				why := "connect refused"
				if rep.up {
					why = "connect ok"
				}
				if err2 = r.SetHealth(tc.key, rep.name, rep.up, why); err2 != nil {
					break
				}
			}
			if !checkErr(t, "SetHealth", err2, tc.wantErr, tc.wantField, "") {
				return
			}
			if diff := cmp.Diff(tc.want, bindings(r.Table()), cmpOpts); diff != "" {
				t.Errorf("table after SetHealth %v (-want +got):\n%s", tc.reports, diff)
			}
			if tc.wantEvents != nil {
				if diff := cmp.Diff(tc.wantEvents, eventList(r.Events())); diff != "" {
					t.Errorf("Events() (-want +got):\n%s", diff)
				}
			}
			got, _, ok := r.Lookup(tc.key.IP, tc.key.Port)
			if ok != (tc.wantLook != "") || got.Name != tc.wantLook {
				t.Errorf("Lookup(%s) = %q, %v; want %q", tc.key, got.Name, ok, tc.wantLook)
			}
		})
	}
}

// TestSetHealthUpAfterLeaseExpired is the race between a health probe and
// a lease: the checker reads the table (the member is down by its health
// check, or a standby that failed over), its probe passes, and the lease
// runs out before the checker's SetHealth(up) arrives. The report was made
// against a table that no longer stands: the member stays down, by its
// lease, until it renews or registers again.
func TestSetHealthUpAfterLeaseExpired(t *testing.T) {
	const ttl = 10 * time.Second
	tExp := t0.Add(ttl)
	tests := []struct {
		name     string
		failback bool
	}{
		{name: "health-down standby"},
		{name: "failed-over former active with failback", failback: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: t0}
			r, err := New(Options{Networks: front, Now: clk.Now, Failback: tc.failback})
			if err != nil {
				t.Fatal(err)
			}
			mustRegister(t, r,
				Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: be80A, TTL: ttl},
				Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: be80B},
			)
			clk.Set(t0.Add(ttl / 2))
			if err := r.SetHealth(k80, "web-a", false, "health check failed: refused"); err != nil {
				t.Fatalf("SetHealth(web-a down): %v", err)
			}
			// The checker's snapshot: web-a is down by its health check,
			// so a passing probe reports it up.
			snap, _ := r.Table().Binding(k80)
			if i := slices.IndexFunc(snap.Members, func(m Member) bool { return m.Name == "web-a" }); i < 0 || !snap.Members[i].Down {
				t.Fatalf("web-a before the expiry: %+v, want down", snap.Members)
			}
			// The lease runs out between the read and the report.
			clk.Set(tExp)
			if n := r.Expire(); n != 1 {
				t.Fatalf("Expire() = %d, want 1", n)
			}
			if err := r.SetHealth(k80, "web-a", true, "health check passed"); err != nil {
				t.Fatalf("SetHealth(web-a up): %v", err)
			}
			b, _ := r.Table().Binding(k80)
			i := slices.IndexFunc(b.Members, func(m Member) bool { return m.Name == "web-a" })
			if m := b.Members[i]; !m.Down || m.State != Standby {
				t.Errorf("web-a after its lease expired and a stale probe reported it up: down=%v state=%s reason=%q; want down (lease) and standby", m.Down, m.State, m.Reason)
			}
			if got, _, ok := r.Lookup(ipShared, 80); !ok || got.Name != "web-b" {
				t.Errorf("Lookup(%s) = %q, %v; want web-b", k80, got.Name, ok)
			}
		})
	}
}
